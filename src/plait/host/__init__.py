"""This machine: where the Envoy binary is, and child processes that must not outlive their parent.

The lowest layer beside `plait.api`: it imports nothing from plait, so every
layer above (xds's static validation, the agent, the runtime, the CLI, the test
harnesses) can use it. Nothing here holds state; nothing blocks apart from
`processes.stop_process`, which awaits a bounded exit.
"""
