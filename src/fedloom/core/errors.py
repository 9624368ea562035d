"""Exceptions with messages a user can act on."""

import signal


class FedloomError(Exception):
    """Base class of every error fedloom raises on purpose."""


class ConfigError(FedloomError):
    """A configuration is invalid; the message lists every problem at once."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        if len(problems) == 1:  # one line: the cause and its hint
            super().__init__(problems[0])
            return
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"invalid configuration ({len(problems)} problem(s)):\n{lines}")


class DataError(FedloomError):
    """A dataset is missing, malformed, or cannot be partitioned as asked."""


class UpdateRejected(FedloomError):
    """A client update failed validation; the round goes on without it."""


class Diverged(FedloomError):
    """Training produced non-finite values: the run stops (exit 1) with a hint."""


NON_FINITE = "NaN or infinite values"
"""The words every non-finite update's rejection or failure carries."""


class NonFinite(UpdateRejected):
    """An update (or its training loss) holding NaN or infinite values: training diverged."""


class Interrupted(BaseException):
    """The run was told to stop (SIGINT or SIGTERM) before it was over. Like
    ``KeyboardInterrupt`` it is not an ``Exception``: no handler that turns an error into
    a round's failure (``except FedloomError``, ``except Exception``) can swallow it."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        self.name = signal.Signals(signum).name
        super().__init__(f"stopped by {self.name}")

    @property
    def exit_code(self) -> int:
        """The shell's convention for a process ended by this signal (130, 143)."""
        return 128 + self.signum
