/**
 * Passwords that top every breach corpus and pass the length rule (8+ characters). NIST SP 800-63B
 * asks to refuse known-compromised passwords instead of imposing composition rules; this short list
 * catches the worst. Compared case-insensitively.
 */
const list = `
password password1 password12 password123 password1234 passw0rd p@ssw0rd p@ssword passwort motdepasse
12345678 123456789 1234567890 0123456789 0987654321 987654321 87654321 11111111 111111111 1111111111
00000000 22222222 55555555 66666666 77777777 88888888 99999999 999999999 12121212 12341234 11223344
123123123 123321123 1234qwer 1q2w3e4r 1q2w3e4r5t 1qaz2wsx 1qazxsw2 q1w2e3r4 q1w2e3r4t5 qwer1234 qwerty12
qwerty123 qwerty1234 qwertyuiop qwertyui qazwsxedc zaq12wsx zaq1zaq1 asdfghjkl asdfasdf asdf1234 zxcvbnm1
abc12345 abcd1234 abcdefgh a1234567 aa123456 a1b2c3d4 123456789a 123abc123 iloveyou iloveyou1 iloveyou2
sunshine sunshine1 princess princess1 football football1 baseball baseball1 basketball welcome1 welcome123
welcome! letmein1 letmein! letmein123 trustno1 superman superman1 starwars starwars1 dragon12 monkey12
master12 changeme changeme1 whatever computer internet michelle jennifer corvette mercedes liverpool
chelsea1 arsenal1 blink182 pokemon1 jordan23 shadow12 samsung1 charlie1 freedom1 hello123 helloworld
killer12 lovely12 mustang1 pepper12 secret12 soccer12 summer12 summer2024 summer2025 summer2026
winter2024 winter2025 winter2026 spring2025 autumn2025 test1234 testtest testing1 testing123 thomas12
tigger12 access14 admin123 admin1234 administrator adminadmin rootroot root1234 toor1234 guest123
default1 letmeinnow qwerty!@# 1q2w3e4r! !qaz2wsx zxcvbnm123 google123 facebook1 linkedin1 myspace1
iloveyou! loveyou1 babygirl1 butterfly angel123 anthony1 jessica1 michael1 jonathan1 daniel12 andrew12
matthew1 joshua12 ashley12 hannah12 nicole12 chocolate purple12 orange12 banana12 cookie12 flower12
master123 shadow123 monkey123 dragon123 ninja123 hunter12 hunter123 ranger12 buster12 batman12 batman123
spiderman 1234abcd abcdef12 qwerty11 pass1234 pass12345 mypassword yourpassword thepassword password!
`;

export const commonPasswords: ReadonlySet<string> = new Set(list.split(/\s+/).filter((p) => p !== ''));

export function isCommonPassword(password: string): boolean {
  return commonPasswords.has(password.toLowerCase());
}
