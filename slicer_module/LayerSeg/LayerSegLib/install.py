"""The runtime install flow, out of the widget (as SlicerNNUnet keeps its install logic): what
to do when a job needs the command line, planning and starting the install, and the status.
No Qt and no dialogs: the widget asks the user and shows the log; this decides and does."""

from __future__ import annotations

from collections.abc import Callable
from enum import Enum
from pathlib import Path

from .process import CliNotFoundError, Progress
from .runtime import (
    LAYERSEG_REQUIREMENT,
    InstallJob,
    InstallPlan,
    Runtime,
    RuntimeSource,
    plan_install,
)

#: Shown when a job needs the runtime and no source to install it from is set.
NO_SOURCE = (
    "LayerSeg runs in its own Python environment, which is not installed yet. Set the runtime "
    "source under Advanced (a layerseg wheel file, a folder of wheels, or a package index URL) "
    "and press Install runtime."
)


class Readiness(Enum):
    """Whether a job can start: a command line is there, or the runtime must be installed
    first (from the configured source), or a source must be set first."""

    READY = "ready"
    INSTALL = "install"
    NEEDS_SOURCE = "needs source"


class InstallLogic:
    """LayerSeg's runtime in ``root`` (beside Slicer's settings): its state, the decision
    before a job, and the install itself (an :class:`InstallJob` the widget polls)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    @property
    def runtime(self) -> Runtime:
        return Runtime(self.root)

    @staticmethod
    def source(
        location: str, requirement: str = "", dependency_index_url: str = ""
    ) -> RuntimeSource:
        """The source the settings describe (blank values take the defaults)."""
        return RuntimeSource(
            location=location.strip(),
            requirement=requirement.strip() or LAYERSEG_REQUIREMENT,
            dependency_index_url=dependency_index_url.strip() or None,
        )

    @staticmethod
    def readiness(cli: Callable[[], object], source: RuntimeSource) -> Readiness:
        """READY when ``cli()`` finds a layerseg command line (a configured executable, the
        runtime, or one on PATH); else INSTALL when ``source`` names where to install from,
        else NEEDS_SOURCE."""
        try:
            cli()
        except CliNotFoundError:
            return Readiness.INSTALL if source.location else Readiness.NEEDS_SOURCE
        return Readiness.READY

    def plan(self, source: RuntimeSource) -> InstallPlan:
        """What the install will do (raises RuntimeSetupError for a bad source); its
        ``summary()`` is what the user confirms."""
        return plan_install(source, self.root)

    @staticmethod
    def start(
        plan: InstallPlan,
        on_line: Callable[[str], None] | None = None,
        on_progress: Callable[[Progress], None] | None = None,
    ) -> InstallJob:
        return InstallJob(plan, on_line, on_progress)
