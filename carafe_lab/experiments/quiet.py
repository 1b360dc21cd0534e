"""Keeping the detection stack's chatter out of notebook cells, into the run's
log: the deprecation notice mmengine triggers on import, mmengine's console
logging, and what pycocotools prints (``launcher.train(..., quiet=True)``)."""

import io
import logging
import warnings


def filter_known_warnings():
    """Ignore the deprecation warnings that reading a config raises and that
    nobody running an experiment can act on. Called where mmengine is first
    used (launcher, predict, compact, the command line)."""
    # mmengine 0.10's is_installed() imports pkg_resources (to find mmdet for
    # `mmdet::` bases); setuptools deprecates that API, and the Makefile pins
    # setuptools < 81, where it still exists, so the notice is noise here.
    warnings.filterwarnings("ignore", message="pkg_resources is deprecated as an API")


class LogWriter(io.TextIOBase):
    """A text stream logging each line written to it (at level) to logger;
    for contextlib.redirect_stdout around libraries that print()."""

    def __init__(self, logger, level=logging.INFO):
        self.logger, self.level = logger, level
        self._partial = ""

    def writable(self):
        return True

    def write(self, text):
        *lines, self._partial = (self._partial + text).split("\n")
        for line in lines:
            if line.strip():
                self.logger.log(self.level, line.rstrip())
        return len(text)

    def flush(self):
        if self._partial.strip():
            self.logger.log(self.level, self._partial.rstrip())
        self._partial = ""


def console_errors_only(logger):
    """Set logger's console handlers (not its file handlers) to ERROR:
    everything still reaches the log file; the console sees errors only."""
    for handler in logger.handlers:
        if not isinstance(handler, logging.FileHandler):
            handler.setLevel(logging.ERROR)
    return logger


def runner_class(quiet):
    """mmengine's Runner; with quiet, a subclass whose logger (built before
    the Runner logs its environment and config) writes to the run's log file
    and, on the console, errors only."""
    from mmengine.runner import Runner

    if not quiet:
        return Runner

    class QuietRunner(Runner):
        def build_logger(self, log_level="INFO", log_file=None, **kwargs):
            return console_errors_only(super().build_logger(log_level, log_file, **kwargs))

    return QuietRunner
