"""Progress bars for long stages: shown on a terminal, silent in logs and CI (not a TTY)."""

from __future__ import annotations

from tqdm.auto import tqdm


def progress_bar(iterable, desc: str, enabled: bool = True, **kwargs):
    # disable=None lets tqdm hide the bar when stderr is not a terminal.
    return tqdm(iterable, desc=desc, disable=None if enabled else True, dynamic_ncols=True, **kwargs)


__all__ = ["progress_bar"]
