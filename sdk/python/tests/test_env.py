"""Environment resolution (docs/plugins.md, "What a plugin is given") and finding checks."""

import os
import tempfile
import unittest

from oxg_plugin import DEFAULT_ADDR, EnvError, Finding, Plugin, PluginError
from oxg_plugin import env as oxg_env
from oxg_plugin.plugin import common_pb2


class TokenTest(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.TemporaryDirectory()
        self.addCleanup(self.dir.cleanup)
        self.file = os.path.join(self.dir.name, "token")
        with open(self.file, "w") as f:
            f.write("  file-token\n")

    def pipe_with(self, data: bytes) -> int:
        r, w = os.pipe()
        os.write(w, data)
        os.close(w)
        return r

    def test_explicit_wins_over_everything(self):
        fd = self.pipe_with(b"fd-token")
        self.addCleanup(lambda: os.close(fd) if _is_open(fd) else None)
        env = {"OXG_AUTH_TOKEN_FD": str(fd), "OXG_AUTH_TOKEN_FILE": self.file,
               "OXG_AUTH_TOKEN": "env-token"}
        self.assertEqual(oxg_env.resolve_token(" explicit ", env), "explicit")
        self.assertTrue(_is_open(fd), "an explicit token must not consume the descriptor")

    def test_fd_first_then_closed(self):
        fd = self.pipe_with(b"fd-token\r\n")
        env = {"OXG_AUTH_TOKEN_FD": str(fd), "OXG_AUTH_TOKEN_FILE": self.file,
               "OXG_AUTH_TOKEN": "env-token"}
        self.assertEqual(oxg_env.resolve_token(None, env), "fd-token")
        self.assertFalse(_is_open(fd))

    def test_file_then_env(self):
        env = {"OXG_AUTH_TOKEN_FILE": self.file, "OXG_AUTH_TOKEN": "env-token"}
        self.assertEqual(oxg_env.resolve_token(None, env), "file-token")
        self.assertEqual(oxg_env.resolve_token(None, {"OXG_AUTH_TOKEN": " env-token\t"}),
                         "env-token")

    def test_errors_never_fall_through_and_never_show_the_token(self):
        cases = [
            ({}, "no auth token"),
            ({"OXG_AUTH_TOKEN_FD": "x", "OXG_AUTH_TOKEN": "e"}, "not a file descriptor"),
            ({"OXG_AUTH_TOKEN_FD": "-3"}, "negative"),
            ({"OXG_AUTH_TOKEN_FD": "987654"}, "cannot read"),
            ({"OXG_AUTH_TOKEN_FILE": os.path.join(self.dir.name, "nope"),
              "OXG_AUTH_TOKEN": "e"}, "cannot read the token file"),
            ({"OXG_AUTH_TOKEN": "   "}, "no auth token"),
        ]
        for env, want in cases:
            with self.subTest(env=env):
                with self.assertRaises(EnvError) as ctx:
                    oxg_env.resolve_token(None, env)
                self.assertIn(want, str(ctx.exception))

    def test_empty_and_oversized_sources(self):
        empty = os.path.join(self.dir.name, "empty")
        open(empty, "w").close()
        with self.assertRaisesRegex(EnvError, "empty"):
            oxg_env.resolve_token(None, {"OXG_AUTH_TOKEN_FILE": empty})
        big = os.path.join(self.dir.name, "big")
        with open(big, "wb") as f:
            f.write(b"a" * 5000)
        with self.assertRaisesRegex(EnvError, "longer"):
            oxg_env.resolve_token(None, {"OXG_AUTH_TOKEN_FILE": big})
        fd = self.pipe_with(b"\xff\xfe")
        with self.assertRaisesRegex(EnvError, "not text"):
            oxg_env.resolve_token(None, {"OXG_AUTH_TOKEN_FD": str(fd)})


class OtherSettingsTest(unittest.TestCase):
    def test_addr(self):
        self.assertEqual(oxg_env.resolve_addr(None, {}), DEFAULT_ADDR)
        self.assertEqual(oxg_env.resolve_addr(None, {"OXG_BUS_ADDR": "10.0.0.1:9"}), "10.0.0.1:9")
        self.assertEqual(oxg_env.resolve_addr("a:1", {"OXG_BUS_ADDR": "b:2"}), "a:1")

    def test_name(self):
        self.assertIsNone(oxg_env.resolve_name(None, {}))
        self.assertEqual(oxg_env.resolve_name(None, {"OXG_PLUGIN_NAME": "seer"}), "seer")
        self.assertEqual(oxg_env.resolve_name("x", {"OXG_PLUGIN_NAME": "seer"}), "x")

    def test_config(self):
        self.assertEqual(oxg_env.resolve_config({}), {})
        self.assertEqual(oxg_env.resolve_config({"OXG_PLUGIN_CONFIG": '{"a": [1]}'}), {"a": [1]})
        for bad in ("{", "[1]", "3"):
            with self.subTest(bad):
                with self.assertRaises(EnvError):
                    oxg_env.resolve_config({"OXG_PLUGIN_CONFIG": bad})

    def test_plugin_reads_the_environment(self):
        p = Plugin(env={"OXG_PLUGIN_NAME": "n", "OXG_BUS_ADDR": "h:1",
                        "OXG_PLUGIN_CONFIG": '{"k": "v"}'})
        self.assertEqual((p.name, p.addr, p.config), ("n", "h:1", {"k": "v"}))

    def test_setup_problems_are_plugin_errors_at_run(self):
        cases = [
            ({"OXG_AUTH_TOKEN": "t"}, "no plugin name"),
            ({"OXG_PLUGIN_NAME": "n"}, "no auth token"),
            ({"OXG_PLUGIN_NAME": "n", "OXG_AUTH_TOKEN": "t", "OXG_PLUGIN_CONFIG": "{"},
             "OXG_PLUGIN_CONFIG"),
        ]
        for env, want in cases:
            with self.subTest(want):
                p = Plugin(env=env, log_stream=_Sink())
                with self.assertRaisesRegex(PluginError, want):
                    p.run()
                self.assertEqual(p.main(), 1)


class FindingTest(unittest.TestCase):
    def test_bad_findings_raise(self):
        cases = [
            dict(type="Bad Type", message="m"),
            dict(type="", message="m"),
            dict(type="x" * 65, message="m"),
            dict(type="ok", message=""),
            dict(type="ok", message="m", severity="urgent"),
            dict(type="ok", message="m", metadata={"bad key": "v"}),
            dict(type="ok", message="m", metadata={str(i): "v" for i in range(65)}),
        ]
        for kwargs in cases:
            with self.subTest(kwargs=str(kwargs)[:60]):
                with self.assertRaises(ValueError):
                    Finding(**kwargs)

    def test_to_proto_maps_severity_and_cuts_long_text(self):
        f = Finding("x.y-z", "m\0n", severity="crit", target="t" * 3000,
                    evidence="\u00e9" * 10000, metadata={"kind": 7})
        p = f.to_proto(common_pb2, flow_id="01ARZ3NDEKTSV4RRFFQ69G5FAV")
        self.assertEqual(p.severity, common_pb2.CRITICAL)
        self.assertEqual(p.message, "m n")
        self.assertLessEqual(len(p.target.encode()), 2048)
        self.assertTrue(p.target.endswith("\u2026"))
        self.assertLessEqual(len(p.evidence.encode()), 16384)
        self.assertEqual(p.metadata["kind"], "7")
        self.assertEqual(p.flow_id, "01ARZ3NDEKTSV4RRFFQ69G5FAV")
        for name, number in [("info", 1), ("low", 2), ("med", 3), ("high", 4), ("HIGH", 4)]:
            self.assertEqual(Finding("t", "m", severity=name).to_proto(common_pb2).severity,
                             number)


class _Sink:
    def write(self, _):
        pass

    def flush(self):
        pass


def _is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
        return True
    except OSError:
        return False


if __name__ == "__main__":
    unittest.main()
