"""Send a job's output to its Snakemake log file.

Adapters wrap their call in :func:`log_to` so progress bars (tqdm writes to stderr),
warnings and tracebacks land in the rule's ``log:`` file instead of the terminal.
"""

from __future__ import annotations

import contextlib
import logging
import traceback
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def log_to(path: str | Path | None) -> Iterator[logging.Logger]:
    logger = logging.getLogger("dipddpm")
    if path is None:
        yield logger
        return
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", buffering=1) as stream:
        handler = logging.StreamHandler(stream)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        try:
            with contextlib.redirect_stderr(stream), contextlib.redirect_stdout(stream):
                yield logger
        except BaseException:
            stream.write(traceback.format_exc())
            raise
        finally:
            logger.removeHandler(handler)
