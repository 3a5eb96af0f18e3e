"""Seer's detectors on tables of positives and negatives. Test values are built at run time
(split literals) so this file does not itself look like it leaks credentials."""

import os
import sys
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import detectors  # noqa: E402
from detectors import iban_ok, luhn_ok, redact, scan  # noqa: E402

AWS = "AKIA" + "Q3EGVP7XK2MZ4T9B"
GHP = "ghp_" + "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8"
SLACK = "xoxb-" + "123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx"
STRIPE = "sk_" + "live_" + "4eC39HqLyjWDarjtT1zdp7dc"
GOOGLE = "AIza" + "SyD-9tSrke72PouQMnMX-a7eZSW0jkFMBWY"
JWT = ("eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9" + "."
       + "eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIn0" + "."
       + "SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c")
PEM = "-----BEGIN " + "RSA PRIVATE KEY-----\nMIIEow...\n-----END RSA PRIVATE KEY-----"
WEBHOOK = "https://hooks.slack.com/services/" + "T0AB12CDE/B0FG34HIJ/" + "a1b2c3d4e5f6g7h8i9j0k1l2"


def kinds(text, **kw):
    return [d.kind for d in scan(text, **kw)]


class PositiveTest(unittest.TestCase):
    CASES = [
        ("aws key in JSON", '{"key": "%s"}' % AWS, "aws_access_key_id", "AKIA\u2026[REDACTED]\u20269B"),
        ("github token", "token=" + GHP, "github_token", "ghp_\u2026[REDACTED]\u2026R8"),
        ("slack token", "slack: " + SLACK, "slack_token", "xoxb\u2026[REDACTED]\u2026Wx"),
        ("slack webhook", "url=" + WEBHOOK, "slack_webhook", "http\u2026[REDACTED]\u2026l2"),
        ("stripe live key", "Stripe.key('%s')" % STRIPE, "stripe_secret_key",
         "sk_l\u2026[REDACTED]\u2026dc"),
        ("google api key", "maps?key=" + GOOGLE, "google_api_key", "AIza\u2026[REDACTED]\u2026WY"),
        ("jwt", "Bearer " + JWT, "jwt", "eyJh\u2026[REDACTED]\u20265c"),
        ("pem header", PEM, "private_key", "-----BEGIN RSA PRIVATE KEY-----"),
        ("generic assignment", 'const api_key = "Zx81kQ0pLm2Vb7"', "generic_secret_assignment",
         "api_key=Zx81\u2026[REDACTED]\u2026b7"),
        ("password in json", '{"password": "hunter2!x9"}', "generic_secret_assignment",
         "password=hu\u2026[REDACTED]"),
        ("email", "contact: jane.doe@corp-mail.io.", "email_address",
         "j\u2026[REDACTED]@corp-mail.io"),
        ("visa with spaces", "card 4111 1111 1111 1111 on file", "credit_card_number",
         "4111\u2026[REDACTED]\u202611"),
        ("mastercard", "cc=5555555555554444", "credit_card_number",
         "5555\u2026[REDACTED]\u202644"),
        ("amex dashes", "amex 3782-822463-10005", "credit_card_number",
         "3782\u2026[REDACTED]\u202605"),
        ("iban", "IBAN: DE89 3704 0044 0532 0130 00", "iban", "DE89\u2026[REDACTED]\u202600"),
        ("iban compact", "GB82WEST12345698765432", "iban", "GB82\u2026[REDACTED]\u202632"),
        ("ssn", "ssn: 536-22-8017", "us_ssn", "53\u2026[REDACTED]"),
    ]

    def test_table(self):
        for name, text, kind, evidence in self.CASES:
            with self.subTest(name):
                found = scan(text)
                self.assertEqual([d.kind for d in found], [kind])
                self.assertEqual(found[0].evidence, evidence)
                if kind != "private_key":  # a PEM header line is not secret
                    self.assertNotEqual(found[0].evidence, found[0].value)

    def test_evidence_never_holds_the_secret(self):
        for name, text, kind, _ in self.CASES:
            if kind == "private_key":
                continue  # the evidence is the PEM header line, which is not secret
            with self.subTest(name):
                for d in scan(text):
                    self.assertNotIn(d.value, d.evidence)
                    self.assertIn("[REDACTED]", d.evidence)

    def test_metadata(self):
        (card,) = scan("4111111111111111")
        self.assertEqual(card.extra, {"brand": "visa", "luhn": "valid"})
        (jwt,) = scan(JWT)
        self.assertEqual(jwt.extra["alg"], "HS256")
        (iban,) = scan("DE89370400440532013000")
        self.assertEqual(iban.extra["country"], "DE")

    def test_specific_detector_wins_over_generic_assignment(self):
        self.assertEqual(kinds("api_key=" + AWS), ["aws_access_key_id"])
        self.assertEqual(kinds("secret: " + STRIPE), ["stripe_secret_key"])

    def test_several_in_one_text_in_order(self):
        text = f"a@corp.io {AWS} 4111111111111111"
        self.assertEqual(kinds(text), ["email_address", "aws_access_key_id",
                                       "credit_card_number"])

    def test_disabled_kinds(self):
        self.assertEqual(kinds("a@corp.io " + AWS, disabled=["email_address"]),
                         ["aws_access_key_id"])


class NegativeTest(unittest.TestCase):
    CASES = [
        ("luhn failure", "4111 1111 1111 1112"),
        ("luhn ok but no brand", "0000000000000000"),
        ("unknown brand", "9999999999999995"),
        ("digits inside a longer number", "order 123456789012345678901234"),
        ("mixed separators", "4111 1111-1111 1111"),
        ("decimal number", "3.14159265358979323"),
        ("timestamp", "1700000000000000000"),
        ("phone", "+1 (555) 010-9999"),
        ("iban bad checksum", "DE88370400440532013000"),
        ("iban wrong length", "DE8937040044053201300"),
        ("ssn 000", "000-12-3456"),
        ("ssn 666", "666-12-3456"),
        ("ssn 9xx", "912-12-3456"),
        ("ssn sample", "123-45-6789"),
        ("date", "2024-01-15"),
        ("aws too short", "AKIA" + "12345"),
        ("aws lowercase", "akia" + "q3egvp7xk2mz4t9b"),
        ("aws inside a word", "XAKIA" + "Q3EGVP7XK2MZ4T9BX"),
        ("redacted by the daemon", 'api_key="[REDACTED]"'),
        ("redacted json", '{"password": "[REDACTED]", "token": "[REDACTED]"}'),
        ("placeholder", "api_key=YOUR_API_KEY_HERE"),
        ("template", "api_key=${API_KEY}"),
        ("code reference", "password: this.state.password"),
        ("word", "password=passwordField"),
        ("short value", "secret=abc123"),
        ("low variety", "secret=aaaaaaaaaaaa"),
        ("html input", '<input type="password" name="password" value="">'),
        ("image name", "logo@2x.png"),
        ("doc address", "mail user@example.com"),
        ("not a jwt", "eyJub3QiOiJqd3Q.eyJhIjoxfQ.abc"),
        ("pem public key", "-----BEGIN " + "PUBLIC KEY-----"),
        ("stripe test key", "sk_" + "test_" + "4eC39HqLyjWDarjtT1zdp7dc"),
        ("github prefix only", "ghp_short"),
        ("plain prose", "The quick brown fox jumps over the lazy dog. Secret sauce!"),
    ]

    def test_table(self):
        for name, text in self.CASES:
            with self.subTest(name):
                self.assertEqual(kinds(text), [])


class HelpersTest(unittest.TestCase):
    def test_redact_lengths(self):
        self.assertEqual(redact("ABCDEFGHIJKL"), "ABCD\u2026[REDACTED]\u2026KL")
        self.assertEqual(redact("ABCDEFGH"), "AB\u2026[REDACTED]")
        self.assertEqual(redact("ABC"), "[REDACTED]")

    def test_luhn(self):
        for good in ("79927398713", "4111111111111111", "378282246310005"):
            self.assertTrue(luhn_ok(good), good)
        for bad in ("79927398710", "4111111111111112", "", "1", "41x1"):
            self.assertFalse(luhn_ok(bad), bad)

    def test_iban(self):
        self.assertTrue(iban_ok("DE89 3704 0044 0532 0130 00"))
        self.assertTrue(iban_ok("NO9386011117947"))
        self.assertFalse(iban_ok("DE89 3704 0044 0532 0130 01"))
        self.assertFalse(iban_ok("XX"))

    def test_large_hostile_input_is_scanned(self):
        # Long runs that keep several patterns busy; must finish and find nothing.
        text = ("a" * 200000 + "@" + "b." * 50000 + "eyJ" * 30000 + "4" * 100000
                + "api_key=;" * 20000 + "4111 " * 20000 + "1-" * 50000)
        self.assertEqual(kinds(text), [])

    def test_kinds_list(self):
        self.assertEqual(len(set(detectors.KINDS)), len(detectors.KINDS))
        self.assertIn("credit_card_number", detectors.KINDS)


if __name__ == "__main__":
    unittest.main()
