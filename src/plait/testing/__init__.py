"""Fakes and harnesses that ship with plait so tests and benchmarks share them: a static-Envoy
runner, loopback backends, a synthetic mesh. Each module says what it starts and how it stops."""
