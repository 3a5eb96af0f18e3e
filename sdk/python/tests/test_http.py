"""The wire-text parser: the daemon's payload shapes, and bad bytes it must refuse cleanly."""

import unittest

from oxg_plugin import WireError, guess_url, parse_wire


class ParseRequestTest(unittest.TestCase):
    def test_origin_form_request(self):
        msg = parse_wire(b"POST /login?next=%2F HTTP/1.1\r\nHost: shop.example\r\n"
                         b"Content-Type: application/json\r\nContent-Length: 13\r\n"
                         b"X-Dup: 1\r\nx-dup: 2\r\n\r\n{\"user\":\"a\"}\n", True)
        self.assertTrue(msg.is_request)
        self.assertEqual(msg.method, "POST")
        self.assertEqual(msg.target, "/login?next=%2F")
        self.assertEqual(msg.http_version, "HTTP/1.1")
        self.assertEqual(msg.url, "https://shop.example/login?next=%2F")
        self.assertEqual(msg.host, "shop.example")
        self.assertEqual(msg.header("content-type"), "application/json")
        self.assertEqual(msg.header("CONTENT-LENGTH"), "13")
        self.assertEqual(msg.headers_all("X-DUP"), ["1", "2"])
        self.assertEqual(msg.headers[0], ("Host", "shop.example"))
        self.assertIsNone(msg.header("missing"))
        self.assertEqual(msg.header("missing", "d"), "d")
        self.assertEqual(msg.body, b"{\"user\":\"a\"}\n")
        self.assertEqual(msg.raw_body_bytes, 13)
        self.assertFalse(msg.body_truncated)

    def test_absolute_form_keeps_the_scheme(self):
        msg = parse_wire(b"GET http://plain.example:8080/a HTTP/1.1\r\nHost: other\r\n\r\n", True)
        self.assertEqual(msg.url, "http://plain.example:8080/a")
        self.assertEqual(msg.body, b"")

    def test_host_from_absolute_target_without_host_header(self):
        msg = parse_wire(b"GET http://h.example/x HTTP/1.1\r\n\r\n", True)
        self.assertEqual(msg.host, "h.example")

    def test_truncation_marker(self):
        msg = parse_wire(b"PUT /u HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\n"
                         b"X-0xgen-Raw-Body-Truncated: 100000\r\n\r\nabcd", True)
        self.assertTrue(msg.body_truncated)
        self.assertEqual(msg.raw_body_bytes, 100000)
        self.assertEqual(msg.body, b"abcd")

    def test_obs_fold_and_value_whitespace(self):
        msg = parse_wire(b"GET / HTTP/1.1\r\nHost:  h \r\nX-Long: a\r\n  b\r\n\r\n", True)
        self.assertEqual(msg.header("host"), "h")
        self.assertEqual(msg.header("x-long"), "a b")

    def test_bare_lf_is_tolerated(self):
        msg = parse_wire(b"GET / HTTP/1.1\nHost: h\n\nbody", True)
        self.assertEqual(msg.header("host"), "h")
        self.assertEqual(msg.body, b"body")

    def test_non_utf8_header_value_is_latin1(self):
        msg = parse_wire(b"GET / HTTP/1.1\r\nX-N: caf\xe9\r\n\r\n", True)
        self.assertEqual(msg.header("x-n"), "caf\u00e9")

    def test_body_text(self):
        msg = parse_wire(b"GET / HTTP/1.1\r\n\r\nab\xffcd", True)
        self.assertEqual(msg.body_text(), "ab\ufffdcd")
        self.assertEqual(msg.body_text(limit=2), "ab")


class ParseResponseTest(unittest.TestCase):
    def test_status_line_and_headers(self):
        msg = parse_wire(b"HTTP/1.1 404 Not Found\r\nServer: x\r\nContent-Length: 2\r\n\r\nno",
                         False)
        self.assertFalse(msg.is_request)
        self.assertEqual(msg.status, 404)
        self.assertEqual(msg.reason, "Not Found")
        self.assertEqual(msg.url, "")
        self.assertEqual(msg.body, b"no")

    def test_empty_reason(self):
        self.assertEqual(parse_wire(b"HTTP/1.1 204\r\n\r\n", False).reason, "")
        self.assertEqual(parse_wire(b"HTTP/1.1 204 \r\n\r\n", False).reason, "")


class MalformedTest(unittest.TestCase):
    CASES = [
        ("empty", b"", True),
        ("no end of head", b"GET / HTTP/1.1\r\nHost: h\r\n", True),
        ("empty start line", b"\r\n\r\n", True),
        ("two words", b"GET /\r\n\r\n", True),
        ("four words", b"GET / x HTTP/1.1\r\n\r\n", True),
        ("bad method", b"G(T / HTTP/1.1\r\n\r\n", True),
        ("bad version", b"GET / HTTX/1.1\r\n\r\n", True),
        ("control in target", b"GET /\x01 HTTP/1.1\r\n\r\n", True),
        ("response line as request", b"HTTP/1.1 200 OK\r\n\r\n", True),
        ("request line as response", b"GET / HTTP/1.1\r\n\r\n", False),
        ("bad status", b"HTTP/1.1 2000 OK\r\n\r\n", False),
        ("letters status", b"HTTP/1.1 abc OK\r\n\r\n", False),
        ("header without colon", b"GET / HTTP/1.1\r\nHost h\r\n\r\n", True),
        ("empty header name", b"GET / HTTP/1.1\r\n: v\r\n\r\n", True),
        ("space before colon", b"GET / HTTP/1.1\r\nHost : h\r\n\r\n", True),
        ("fold first", b"GET / HTTP/1.1\r\n folded\r\n\r\n", True),
        ("nul in head", b"GET / HTTP/1.1\r\nX: a\0b\r\n\r\n", True),
        ("too many headers", b"GET / HTTP/1.1\r\n" + b"X: 1\r\n" * 1001 + b"\r\n", True),
    ]

    def test_malformed_messages_raise_wire_error(self):
        for name, data, is_request in self.CASES:
            with self.subTest(name):
                with self.assertRaises(WireError):
                    parse_wire(data, is_request)

    def test_not_bytes(self):
        with self.assertRaises(WireError):
            parse_wire("GET / HTTP/1.1\r\n\r\n", True)


class GuessUrlTest(unittest.TestCase):
    def test_table(self):
        cases = [
            ("/a?b=1", "h.example", "https://h.example/a?b=1"),
            ("/", "h.example:8443", "https://h.example:8443/"),
            ("HTTP://H/x", None, "HTTP://H/x"),
            ("https://h/x", "other", "https://h/x"),
            ("*", "h", "https://h"),
            ("/a", None, ""),
            ("/a", "", ""),
            ("/a", "evil/host", ""),
            ("/a", "user@host", ""),
            ("h.example:443", "h.example:443", ""),
        ]
        for target, host, want in cases:
            with self.subTest(target=target, host=host):
                self.assertEqual(guess_url(target, host), want)

    def test_scheme_from_the_daemon(self):
        self.assertEqual(guess_url("/a", "h", "http"), "http://h/a")
        self.assertEqual(guess_url("/a", "h", "HTTPS"), "https://h/a")
        self.assertEqual(guess_url("*", "h", "http"), "http://h")
        self.assertEqual(guess_url("/a", "h", "ftp"), "https://h/a")
        self.assertEqual(guess_url("https://x/a", "h", "http"), "https://x/a")

    def test_scheme_of_absolute_form(self):
        self.assertEqual(parse_wire(b"GET HTTP://h/ HTTP/1.1\r\n\r\n", True).scheme, "http")
        self.assertEqual(parse_wire(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n", True).scheme, "")


if __name__ == "__main__":
    unittest.main()
