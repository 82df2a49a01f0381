"""The ``plait`` command (typer + rich). Commands parse arguments, call the library, and hand
results to small formatting functions; they hold no logic of their own.
"""
