# TLS tests.
