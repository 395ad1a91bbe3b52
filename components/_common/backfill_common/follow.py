"""A component following its settings: the layers applied (backfill_common.settings), each
refusal logged, and the last good values kept in the work folder across restarts
(backfill_common.last_good). The three runners share it; what a change does is theirs.

    followed = Followed(Settings("config-sensor", "sampling", access=ACCESS, thing=thing),
                        log, problems, path=Path.cwd() / "settings.json")
    change = followed.apply(config=ipc.get_configuration(), shadow=read_shadow(ipc, "backfill"))
    change = followed.apply(shadow=document)        # a shadow document arrived
    change = followed.apply(config=config)          # the configuration changed
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

from . import last_good
from .settings import Change, Settings


class Followed:
    def __init__(self, settings: Settings, log: logging.Logger, problems=None,
                 path: Optional[Path] = None) -> None:
        self.settings, self.log, self.problems, self.path = settings, log, problems, path
        if path is not None:
            settings.restore(last_good.load(path))
        self._saved = dict(settings.effective) if path is not None else None

    @property
    def effective(self) -> dict:
        return self.settings.effective

    def apply(self, config: Optional[dict] = None, shadow: object = False) -> Change:
        change = self.settings.apply(config=config, shadow=shadow)
        for error in change.errors:
            self.log.warning("setting refused: %s", error)
        if self.path is not None and change.effective != self._saved:
            try:
                last_good.save(self.path, change.effective)
                self._saved = dict(change.effective)
            except OSError as error:     # a full disk: in effect all the same, saved with the next change
                if self.problems is not None:
                    self.problems.add("settings save", f"could not keep the settings in {self.path}: {error}")
                else:
                    self.log.warning("could not keep the settings in %s: %s", self.path, error)
        return change
