"""Launcher failures, each specific and actionable (the message says what to do)."""

from __future__ import annotations

__all__ = [
    "BrokerExitedError",
    "PortInUseError",
    "ReadinessTimeoutError",
    "StackError",
    "StackNotRunningError",
    "ToolMissingError",
]


class StackError(RuntimeError):
    """Base class: the CLI prints the message and exits non-zero, without a traceback."""


class ToolMissingError(StackError):
    def __init__(self, tool: str, purpose: str, install_hint: str) -> None:
        super().__init__(f"{tool} is missing: it is needed {purpose}. {install_hint}")
        self.tool = tool


class PortInUseError(StackError):
    def __init__(self, part: str, port: int, setting: str) -> None:
        super().__init__(
            f"port {port} on 127.0.0.1 is already in use, so {part} cannot listen there. "
            f"Stop whatever holds it (`ss -ltnp 'sport = :{port}'`), or choose another port "
            f"with {setting}=<port> (0 picks a free one)"
        )
        self.part = part
        self.port = port


class BrokerExitedError(StackError):
    def __init__(self, part: str, returncode: int | None, log_path: str, last_lines: str) -> None:
        super().__init__(
            f"{part} exited during start-up (exit code {returncode}). "
            f"Last lines of {log_path}:\n{last_lines}"
        )


class ReadinessTimeoutError(StackError):
    def __init__(self, part: str, timeout_s: float, log_path: str, last_lines: str) -> None:
        super().__init__(
            f"{part} was not ready after {timeout_s:.0f} s. Last lines of {log_path}:\n{last_lines}"
        )


class StackNotRunningError(StackError):
    pass
