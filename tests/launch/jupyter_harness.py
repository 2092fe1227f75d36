"""Start JupyterLab on loopback and drive a notebook in it through a real browser.

Two pieces, used by the browser tests and by ``benchmarks/launch.py``:

* `JupyterLab`: a server process on 127.0.0.1 (a free port, or the one asked for), ready
  when ``/api/status`` answers, stopped with its whole process group and its kernels.
  A port that is taken, or a server that dies, raises `LabError` with the reason and the
  tail of the server's log.
* `run_notebook`: in a Playwright page, open a notebook fresh, "Restart Kernel and Run All
  Cells", wait until the kernel is idle and every code cell has run, and collect what the
  page shows: error outputs (from the notebook model: the DOM renders errors and warnings
  alike as stderr), widget views that did not render, figures, overflow. A kernel that
  dies (JupyterLab's "Kernel Restarting" dialog) raises `KernelDied`. The run also records
  every code cell's source and, per cell that ran, its wall time (the kernel's busy to idle
  status for its execute request) and the kernel's CPU time meanwhile (`KernelCpu`).
* `explorers` / `move_slider` / `figure_signature`: find each interactive explorer (an
  ipywidgets slider above a plotly figure) and drag its slider with the mouse.

The page is driven through JupyterLab's own command registry (``window.jupyterapp``, which
``--LabApp.expose_app_in_browser`` exposes), so no test depends on menu labels.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--disable-dev-shm-usage"]
INSTALL_HINT = ("install Debian's Chromium with `apt-get install -y chromium` (it provides "
                f"{CHROMIUM}; Playwright's own browser download is not used)")

#: JupyterLab settings for a test session: no news prompt covering the page, no autosave
#: writing outputs into the notebook files.
TEST_SETTINGS = {
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings":
        {"fetchNews": "false", "checkForUpdates": False},
    "@jupyterlab/docmanager-extension/plugin.jupyterlab-settings": {"autosave": False},
}


class LabError(RuntimeError):
    """JupyterLab could not be started or driven; the message says why."""


class PortInUse(LabError):
    """The port asked for is taken by another process."""


class KernelDied(LabError):
    """The notebook's kernel died while running (most often: out of memory)."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (the OS picks it)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    """True when something on ``host`` accepts connections on ``port`` or holds it."""
    with socket.socket() as s:
        s.settimeout(1.0)
        if s.connect_ex((host, port)) == 0:
            return True
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


def chromium_problem(path: str = CHROMIUM) -> str | None:
    """Why Chromium cannot drive the tests here (None when it can)."""
    if not Path(path).exists():
        return f"Chromium is not installed at {path}: {INSTALL_HINT}."
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return ("the Python package `playwright` is missing: pip install -e '.[dev]' "
                "(or pip install playwright); it drives Debian's Chromium, no browser download")
    return None


def _descendants(pid: int) -> list:
    try:
        import psutil
    except ImportError:
        return []
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []


class JupyterLab:
    """A JupyterLab server on loopback, as a context manager.

    ``python``: the interpreter of the environment to serve from (its kernels run there).
    ``root_dir``: the folder JupyterLab shows (notebooks are opened relative to it).
    ``port``: None picks a free one; a taken port raises `PortInUse`.
    """

    def __init__(self, python: str | os.PathLike, root_dir: str | os.PathLike, *,
                 port: int | None = None, workdir: str | os.PathLike | None = None,
                 settings: dict | None = None, env: dict | None = None):
        self.python = str(python)
        self.root_dir = Path(root_dir)
        self.requested_port = port
        self.port = port
        self.token = secrets.token_hex(16)
        self.workdir = Path(workdir) if workdir else self.root_dir.parent / ".lab-session"
        self.settings = TEST_SETTINGS if settings is None else settings
        self.extra_env = env or {}
        self.process: subprocess.Popen | None = None
        self.log_path = self.workdir / "jupyterlab.log"
        self.start_seconds: float | None = None

    # ---------------------------------------------------------------- process

    def _command(self) -> list[str]:
        return [self.python, "-m", "jupyterlab", "--no-browser", "--allow-root",
                "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={self.port}",
                "--ServerApp.port_retries=0", f"--IdentityProvider.token={self.token}",
                f"--ServerApp.root_dir={self.root_dir}",
                "--LabApp.expose_app_in_browser=True",
                f"--LabApp.user_settings_dir={self.workdir / 'settings'}",
                f"--LabApp.workspaces_dir={self.workdir / 'workspaces'}"]

    def _environment(self) -> dict:
        env = dict(os.environ)
        bin_dir = str(Path(self.python).parent)
        env["PATH"] = bin_dir + os.pathsep + env.get("PATH", "")
        env.pop("PYTHONPATH", None)
        for name, sub in (("JUPYTER_CONFIG_DIR", "config"), ("JUPYTER_RUNTIME_DIR", "runtime"),
                          ("JUPYTER_DATA_DIR", "data"), ("IPYTHONDIR", "ipython")):
            env[name] = str(self.workdir / sub)  # nothing from the user's own Jupyter setup
        env.update(self.extra_env)
        return env

    def _write_settings(self) -> None:
        for rel, values in self.settings.items():
            path = self.workdir / "settings" / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(values))

    def log_tail(self, lines: int = 25) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        return "\n".join(text[-lines:])

    def start(self, timeout: float = 180.0) -> JupyterLab:
        """Start the server and wait until it answers; raise `LabError` with the reason."""
        if self.requested_port is not None and port_in_use(self.requested_port):
            raise PortInUse(
                f"port {self.requested_port} on 127.0.0.1 is already in use (a notebook server "
                f"already running? `jupyter server list` shows them); stop it, choose another "
                f"port, or pass port=None to pick a free one")
        for attempt in range(3):
            if self.requested_port is None:
                self.port = free_port()
            try:
                return self._start_once(timeout)
            except PortInUse:
                # a free port taken between our check and the server's bind: try another
                if self.requested_port is not None or attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _start_once(self, timeout: float) -> JupyterLab:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._write_settings()
        t0 = time.perf_counter()
        with open(self.log_path, "w") as log:
            self.process = subprocess.Popen(
                self._command(), stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir,
                env=self._environment(), start_new_session=True)
        deadline = time.monotonic() + timeout
        while True:
            code = self.process.poll()
            if code is not None:
                tail = self.log_tail()
                self.process = None
                if "already in use" in tail or "Address already in use" in tail:
                    raise PortInUse(f"port {self.port} on 127.0.0.1 is already in use; JupyterLab "
                                    f"said:\n{tail}")
                raise LabError(f"JupyterLab exited with code {code} before it was ready. "
                               f"Last lines of its log ({self.log_path}):\n{tail}")
            if self._status_ok():
                self.start_seconds = time.perf_counter() - t0
                return self
            if time.monotonic() > deadline:
                self.stop()
                raise LabError(f"JupyterLab did not answer on {self.url()} within {timeout:.0f} "
                               f"s. Last lines of its log:\n{self.log_tail()}")
            time.sleep(0.25)

    def _status_ok(self) -> bool:
        try:
            with urllib.request.urlopen(self.url("api/status"), timeout=2) as r:
                return r.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def url(self, path: str = "lab", **query: str) -> str:
        q = "&".join([f"token={self.token}", *(f"{k}={v}" if v else k for k, v in query.items())])
        return f"http://127.0.0.1:{self.port}/{path.lstrip('/')}?{q}"

    def log_size(self) -> int:
        try:
            return self.log_path.stat().st_size
        except OSError:
            return 0

    def log_errors(self, since: int = 0) -> list[str]:
        """Error records (``[E ...]`` and the lines that follow them) the server logged
        after byte offset ``since``."""
        try:
            with open(self.log_path, "rb") as f:
                f.seek(since)
                text = f.read().decode(errors="replace")
        except OSError:
            return []
        records, current = [], None
        for line in text.splitlines():
            if line.startswith("[E "):
                current = [line]
                records.append(current)
            elif line.startswith("["):
                current = None
            elif current is not None and len(current) < 40:
                current.append(line)
        return ["\n".join(r) for r in records]

    def kernel_pids(self) -> list[int]:
        """Process ids of the kernels this server started."""
        if self.process is None:
            return []
        return [p.pid for p in _descendants(self.process.pid)
                if any("ipykernel" in part for part in _cmdline(p))]

    def stop(self, timeout: float = 15.0) -> None:
        """Stop the server, its process group and any kernel it left behind."""
        if self.process is None:
            return
        children = _descendants(self.process.pid)
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.process.wait(5)
        for child in children:  # kernels run in process groups of their own
            try:
                child.kill()
            except Exception:  # already gone
                pass
        self.process = None

    def __enter__(self) -> JupyterLab:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _cmdline(proc) -> list[str]:
    try:
        return proc.cmdline()
    except Exception:
        return []


class PeakMemory:
    """Sample resident memory in a thread: ``peak`` of the server's kernels, ``server_peak``
    of the server process itself (bytes)."""

    def __init__(self, lab: JupyterLab, interval: float = 0.5):
        self.lab, self.interval, self.peak, self.server_peak = lab, interval, 0, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            import psutil
        except ImportError:
            return
        while not self._stop.is_set():
            if self.lab.process is not None:
                try:
                    rss = psutil.Process(self.lab.process.pid).memory_info().rss
                    self.server_peak = max(self.server_peak, rss)
                except psutil.Error:
                    pass
            for pid in self.lab.kernel_pids():
                try:
                    self.peak = max(self.peak, psutil.Process(pid).memory_info().rss)
                except psutil.Error:
                    pass
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(5)


class KernelCpu:
    """Sample the CPU time (user + system) of the server's kernels in a thread, every
    ``interval`` s, against the clock (``time.time()``, the clock of the kernel's message
    dates); `between` says how much CPU they used in a span of time."""

    def __init__(self, lab: JupyterLab, interval: float = 0.2):
        self.lab, self.interval = lab, interval
        self.samples: list[tuple[float, dict[int, float]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> None:
        try:
            import psutil
        except ImportError:
            return
        now = {}
        for pid in self.lab.kernel_pids():
            try:
                t = psutil.Process(pid).cpu_times()
            except psutil.Error:
                continue
            now[pid] = t.user + t.system
        self.samples.append((time.time(), now))

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def start(self) -> KernelCpu:
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread.is_alive():
            self._stop.set()
            self._thread.join(5)
            self.sample()  # the last word, after the run

    def between(self, t0: float, t1: float) -> float:
        """CPU seconds the kernels used from ``t0`` to ``t1`` (epoch s): the last sample at
        or before ``t0`` to the first at or after ``t1`` (so at most two intervals more),
        summed over the kernels present in both (a restarted kernel is a new process)."""
        if not self.samples:
            return 0.0
        before = [s for t, s in self.samples if t <= t0] or [self.samples[0][1]]
        after = [s for t, s in self.samples if t >= t1] or [self.samples[-1][1]]
        a, b = before[-1], after[0]
        return sum(max(0.0, b[pid] - a[pid]) for pid in b if pid in a)


# -------------------------------------------------------------------------- the browser


def launch_chromium(playwright, path: str = CHROMIUM):
    """Debian's Chromium, headless, through Playwright (no browser download)."""
    problem = chromium_problem(path)
    if problem:
        raise LabError(problem)
    return playwright.chromium.launch(executable_path=path, headless=True, args=CHROMIUM_ARGS)


# JavaScript run in the page. `panel()` is the notebook that is open; the hooks record the
# kernel's status changes, every error the kernel sends (including errors raised by
# widget callbacks, which have no cell to show them in), and for every execute request the
# kernel's timestamps (message header dates) of its busy and idle status and its
# execution count: when each cell ran.
_JS_PANEL = """
() => {
  const app = window.jupyterapp;
  const w = app && app.shell.currentWidget;
  const kernel = w && w.sessionContext && w.sessionContext.session
                 && w.sessionContext.session.kernel;
  // as a student would: the notebook is loaded and its kernel connected and idle
  return !!(w && w.content && w.content.model && w.context && w.context.isReady && kernel
            && kernel.connectionStatus === 'connected' && kernel.status === 'idle');
}
"""

_JS_HOOK = r"""
() => {
  const panel = window.jupyterapp.shell.currentWidget;
  const rec = window.__ttqlab = {statuses: [], errors: [], path: panel.context.path,
                                 busy: {}, executions: {}};
  panel.sessionContext.statusChanged.connect((_, s) => rec.statuses.push(s));
  panel.sessionContext.iopubMessage.connect((_, msg) => {
    const parent = msg.parent_header && msg.parent_header.msg_id;
    const at = msg.header.date || new Date().toISOString();
    if (parent && msg.header.msg_type === 'status') {
      const state = msg.content.execution_state;
      if (state === 'busy') rec.busy[parent] = at;
      else if (state === 'idle' && rec.executions[parent]) rec.executions[parent].end = at;
    } else if (parent && msg.header.msg_type === 'execute_input') {
      rec.executions[parent] = {count: msg.content.execution_count,
                                start: rec.busy[parent] || at, end: null};
    }
    if (msg.header.msg_type === 'error')
      rec.errors.push(msg.content.ename + ': ' + msg.content.evalue + '\n'
                      + msg.content.traceback.join('\n').replace(/\x1b\[[0-9;]*m/g, ''));
  });
  return true;
}
"""

_JS_PROGRESS = """
() => {
  const panel = window.jupyterapp.shell.currentWidget;
  const cells = panel.content.widgets.filter(c => c.model.type === 'code');
  const kernel = panel.sessionContext.session && panel.sessionContext.session.kernel;
  const running = cells.findIndex(c => c.model.executionCount === null
                                       && c.node.querySelector('.jp-InputPrompt')
                                       && c.node.querySelector('.jp-InputPrompt').textContent
                                            .includes('*'));
  let errors = 0;
  for (const c of cells)
    for (let i = 0; i < c.model.outputs.length; i++)
      if (c.model.outputs.get(i).type === 'error') errors++;
  return {status: kernel ? kernel.status : 'none', code: cells.length,
          done: cells.filter(c => c.model.executionCount !== null).length,
          running, errors, statuses: window.__ttqlab.statuses.slice(),
          dialog: Array.from(document.querySelectorAll('.jp-Dialog'))
                       .map(d => d.innerText).join('\\n')};
}
"""

_JS_CELLS = """
() => {
  // every cell's index, type, source and execution count, and the hook's execution records
  const cells = window.jupyterapp.shell.currentWidget.content.widgets.map((c, index) => ({
    index, type: c.model.type, source: c.model.sharedModel.getSource(),
    count: c.model.type === 'code' ? c.model.executionCount : null}));
  return {cells, executions: Object.values(window.__ttqlab.executions)};
}
"""

_JS_REPORT = """
() => {
  // pairs of labels (titles, tick labels, legend, colour bar) drawn over each other
  const overlappingText = (plot) => {
    const boxes = Array.from(plot.querySelectorAll('svg text'))
      .filter(t => t.textContent.trim() && !t.closest('.hoverlayer'))
      .map(t => ({text: t.textContent.trim().slice(0, 50), r: t.getBoundingClientRect()}))
      .filter(b => b.r.width > 0 && b.r.height > 0);
    const hits = [];
    for (let i = 0; i < boxes.length; i++)
      for (let j = i + 1; j < boxes.length; j++) {
        const a = boxes[i].r, b = boxes[j].r;
        const w = Math.min(a.right, b.right) - Math.max(a.left, b.left);
        const h = Math.min(a.bottom, b.bottom) - Math.max(a.top, b.top);
        if (w > 3 && h > 3) hits.push([boxes[i].text, boxes[j].text]);
      }
    return hits;
  };
  // the smallest font drawn in a plot (px)
  const minFont = (plot) => {
    const sizes = Array.from(plot.querySelectorAll('svg text'))
      .filter(t => t.textContent.trim() && !t.closest('.hoverlayer')
                   && t.getBoundingClientRect().width > 0)
      .map(t => parseFloat(getComputedStyle(t).fontSize)).filter(s => s > 0);
    return sizes.length ? Math.min(...sizes) : null;
  };
  const panel = window.jupyterapp.shell.currentWidget;
  const cells = panel.content.widgets;
  const out = [];
  cells.forEach((cell, ci) => {
    if (cell.model.type !== 'code') return;
    const area = cell.outputArea;
    const areaRect = area.node.getBoundingClientRect();
    for (let oi = 0; oi < cell.model.outputs.length; oi++) {
      const model = cell.model.outputs.get(oi);
      const child = area.widgets[oi];
      const node = child ? child.node.querySelector('.jp-OutputArea-output') : null;
      const rect = node ? node.getBoundingClientRect() : null;
      const text = node ? node.innerText : '';
      const widget = Object.keys(model.data || {})
                           .includes('application/vnd.jupyter.widget-view+json');
      const plots = node ? Array.from(node.querySelectorAll('.js-plotly-plot')) : [];
      const images = node ? Array.from(node.querySelectorAll('img')) : [];
      let overflow = 0;
      if (node) {
        const right = areaRect.right;
        for (const el of [node, ...node.querySelectorAll('.jupyter-widgets, .js-plotly-plot')]) {
          const r = el.getBoundingClientRect();
          if (r.width > 0) overflow = Math.max(overflow, r.right - right);
        }
        overflow = Math.max(overflow, node.scrollWidth - node.clientWidth);
      }
      out.push({
        cell: ci, execution_count: cell.model.executionCount, type: model.type,
        mime: Object.keys(model.data || {}),
        text: (model.type === 'error')
              ? (model.toJSON().ename + ': ' + model.toJSON().evalue) : text.slice(0, 400),
        traceback: (model.type === 'error') ? text.slice(-1500) : '',
        widget,
        // a widget view is a Lumino widget the widget manager put in the output
        widget_views: node ? Array.from(node.children).filter(
          c => c.classList.contains('lm-Widget') && c.getBoundingClientRect().height > 0).length
          : 0,
        width: rect ? rect.width : 0, height: rect ? rect.height : 0,
        area_width: areaRect.width,
        progress_bars: node ? node.querySelectorAll('.widget-hprogress, .widget-vprogress')
          .length : 0,
        sliders: node ? Array.from(node.querySelectorAll('.widget-hslider'))
          .map(el => el.getBoundingClientRect().width).filter(w => w > 0) : [],
        plots: plots.map(p => ({
          overlaps: overlappingText(p),
          min_font: minFont(p),
          traces: (p.data || []).length,
          svg: !!p.querySelector('svg.main-svg'),
          width: p.getBoundingClientRect().width, height: p.getBoundingClientRect().height,
          title: (p.layout && p.layout.title && (p.layout.title.text || p.layout.title)) || '',
        })),
        images: images.map(i => ({w: i.naturalWidth, h: i.naturalHeight,
                                  shown: i.getBoundingClientRect().width})),
        overflow,
        problems: ['Error displaying widget', 'Loading widget...', 'Failed to load model',
                   'Could not create view', 'A Jupyter widget could not be displayed']
                  .filter(s => text.includes(s)),
      });
    }
  });
  return out;
}
"""


#: layout checks on every output: plotly text, plot width (fraction of the output area),
#: ipywidgets slider length, pixels per displayed pixel of a matplotlib image (retina = 2)
MIN_FONT_PX, MIN_PLOT_FRACTION, MIN_SLIDER_PX, MIN_IMAGE_DENSITY = 12, 0.8, 400, 1.5


@dataclasses.dataclass
class Output:
    """One output of one cell, as the page shows it."""

    cell: int
    execution_count: int | None
    type: str
    mime: list
    text: str
    traceback: str
    widget: bool
    widget_views: int
    width: float
    height: float
    plots: list
    images: list
    overflow: float
    problems: list
    area_width: float = 0.0
    sliders: list = dataclasses.field(default_factory=list)
    progress_bars: int = 0  # ipywidgets progress bars in it (a tqdm.notebook bar has one)

    @property
    def closed(self) -> bool:
        """A widget the kernel closed (``widget.close()``, as a finished tqdm bar with
        ``leave=False`` does): no view, no size and no text. A widget that cannot render
        says so in text ("Error displaying widget ..."), which this is not."""
        return (self.widget and self.widget_views == 0 and not self.text.strip()
                and self.width == 0 and self.height == 0 and not self.problems)


@dataclasses.dataclass
class NotebookRun:
    """What one "Restart Kernel and Run All Cells" produced."""

    path: str
    seconds: float  # from "Restart Kernel and Run All Cells" until the kernel is idle
    open_seconds: float  # from loading the page until the kernel is connected and idle
    code_cells: int
    executed: int
    outputs: list[Output]
    kernel_errors: list[str]
    page_errors: list[str]
    #: the source of every code cell, by cell index (as `Output.cell` counts)
    sources: dict[int, str] = dataclasses.field(default_factory=dict)
    #: per code cell that ran, by cell index: (wall s, kernel CPU s) from the kernel's busy
    #: to its idle status for the cell's execute request (CPU from `KernelCpu`)
    timings: dict[int, tuple[float, float]] = dataclasses.field(default_factory=dict)

    @property
    def errors(self) -> list[Output]:
        return [o for o in self.outputs if o.type == "error"]

    @property
    def widgets(self) -> list[Output]:
        return [o for o in self.outputs if o.widget]

    def problems(self) -> list[str]:
        """Everything wrong with the run, one line each (empty when it is clean)."""
        out = []
        for o in self.errors:
            out.append(f"cell {o.cell} [{o.execution_count}] raised {o.text}\n{o.traceback}")
        shown = {o.text for o in self.errors}
        for e in self.kernel_errors:
            if e.split("\n", 1)[0] not in shown:
                out.append(f"the kernel reported an error outside any cell output "
                           f"(a widget callback?): {e}")
        if self.executed < self.code_cells:
            out.append(f"only {self.executed} of {self.code_cells} code cells ran")
        for o in self.widgets:
            if o.closed:
                continue  # closed by the kernel on purpose (a finished tqdm bar, leave=False)
            if o.problems:
                out.append(f"cell {o.cell}: widget shows {o.problems}: {o.text[:200]!r}")
            elif o.widget_views == 0 or o.height < 20 or o.width < 50:
                out.append(f"cell {o.cell}: widget did not render ({o.widget_views} views, "
                           f"{o.width:.0f}x{o.height:.0f} px)")
        for o in self.outputs:
            for p in o.plots:
                if not p["svg"] or p["traces"] == 0 or p["height"] < 100 or p["width"] < 100:
                    out.append(f"cell {o.cell}: plotly figure is blank ({p})")
                if p["overlaps"]:
                    out.append(f"cell {o.cell}: figure {p['title']!r} draws labels over each "
                               f"other: {p['overlaps'][:5]}")
                if p.get("min_font") is not None and p["min_font"] < MIN_FONT_PX:
                    out.append(f"cell {o.cell}: figure {p['title']!r} has text of "
                               f"{p['min_font']:.0f} px (at least {MIN_FONT_PX} px)")
                if o.area_width and p["width"] < MIN_PLOT_FRACTION * o.area_width:
                    out.append(f"cell {o.cell}: figure {p['title']!r} is {p['width']:.0f} px "
                               f"wide in a {o.area_width:.0f} px output: use the output width")
            for w in o.sliders:
                if w < MIN_SLIDER_PX:
                    out.append(f"cell {o.cell}: a slider is {w:.0f} px long (at least "
                               f"{MIN_SLIDER_PX} px)")
            for im in o.images:
                if im["w"] == 0 or im["h"] == 0:
                    out.append(f"cell {o.cell}: an image did not load")
                elif im.get("shown") and im["w"] < MIN_IMAGE_DENSITY * im["shown"]:
                    out.append(f"cell {o.cell}: an image is drawn at {im['w']} px for "
                               f"{im['shown']:.0f} px on screen: blurry on HiDPI screens "
                               f"(ttqlab.viz sets the retina format)")
            if o.overflow > 2:
                out.append(f"cell {o.cell}: output overflows its cell by {o.overflow:.0f} px")
        out += [f"JavaScript error in the page: {e}" for e in self.page_errors]
        return out


def open_notebook(page, lab: JupyterLab, path: str, timeout: float = 120.0) -> None:
    """Load JupyterLab on ``path`` with a reset workspace; wait for its kernel."""
    try:
        urllib.request.urlopen(lab.url(f"api/contents/{path}", content="0"), timeout=30).close()
    except urllib.error.HTTPError as err:
        raise LabError(f"JupyterLab cannot open {path!r} under {lab.root_dir}: HTTP {err.code}"
                       ) from err
    page.goto(lab.url(f"lab/tree/{path}", reset=""), timeout=timeout * 1000)
    try:
        page.wait_for_function(_JS_PANEL, timeout=timeout * 1000, polling=250)
    except Exception as err:
        raise LabError(f"JupyterLab did not open {path} with a running kernel within "
                       f"{timeout:.0f} s ({err.__class__.__name__}). Server log:\n"
                       f"{lab.log_tail()}") from err


def _accept_dialog(page, timeout: float = 30.0) -> None:
    page.wait_for_selector(".jp-Dialog .jp-mod-accept", timeout=timeout * 1000)
    page.click(".jp-Dialog .jp-mod-accept")


def _died(progress: dict) -> bool:
    return ("autorestarting" in progress["statuses"] or "dead" in progress["statuses"]
            or "appears to have died" in progress["dialog"])


@dataclasses.dataclass
class StartedRun:
    """A "Restart Kernel and Run All Cells" in progress (see `start_notebook`)."""

    path: str
    t0: float
    open_seconds: float
    log_start: int
    page_errors: list[str]
    cpu: KernelCpu | None = None  # samples the kernel's CPU time while the run goes on


def start_notebook(page, lab: JupyterLab, path: str) -> StartedRun:
    """Open ``path`` fresh, clear its outputs, restart its kernel and start Run All; return
    at once (the cells run on while the caller watches the page; `finish_run` waits)."""
    page_errors: list[str] = []
    page.on("pageerror", lambda err: page_errors.append(str(err)))
    t_open = time.perf_counter()
    open_notebook(page, lab, path)
    open_seconds = time.perf_counter() - t_open
    page.evaluate(_JS_HOOK)
    # outputs saved in the file would look like a finished run: clear them first
    page.evaluate("window.jupyterapp.commands.execute('notebook:clear-all-cell-outputs')")
    left = page.evaluate(_JS_PROGRESS)["done"]
    if left:
        raise LabError(f"{path}: {left} cells still show an execution count after clearing")
    log_start = lab.log_size()
    cpu = KernelCpu(lab).start()
    try:
        t0 = time.perf_counter()
        page.evaluate("void window.jupyterapp.commands.execute('notebook:restart-run-all')")
        _accept_dialog(page)
    except BaseException:
        cpu.stop()
        raise
    return StartedRun(path, t0, open_seconds, log_start, page_errors, cpu)


def progress(page) -> dict:
    """Where the run is: ``code`` cells, ``done`` (with an execution count), ``running``
    (index of the cell showing ``[*]``, -1 if none), kernel ``status``, ``errors``."""
    return page.evaluate(_JS_PROGRESS)


def run_notebook(page, lab: JupyterLab, path: str, *, timeout: float = 900.0,
                 settle: float = 60.0) -> NotebookRun:
    """Open ``path`` fresh, restart its kernel and run all cells; return what the page shows.

    Raises `KernelDied` when the kernel dies during the run and `LabError` when the run
    does not finish within ``timeout`` seconds (saying which cell was running).
    """
    return finish_run(page, lab, start_notebook(page, lab, path), timeout=timeout,
                      settle=settle)


def finish_run(page, lab: JupyterLab, started: StartedRun, *, timeout: float = 900.0,
               settle: float = 60.0) -> NotebookRun:
    """Wait until the run `start_notebook` began is over; return what the page shows."""
    try:
        return _finish_run(page, lab, started, timeout, settle)
    finally:
        if started.cpu is not None:
            started.cpu.stop()


def _finish_run(page, lab: JupyterLab, started: StartedRun, timeout: float,
                settle: float) -> NotebookRun:
    path, t0, log_start = started.path, started.t0, started.log_start
    deadline = time.monotonic() + timeout
    idle_since = None
    while True:
        now = page.evaluate(_JS_PROGRESS)
        if _died(now):
            raise KernelDied(
                f"the kernel of {path} died while running code cell "
                f"{now['done'] + 1} of {now['code']} (JupyterLab: 'The kernel appears "
                f"to have died'); most often it ran out of memory (Binder gives 2 GB). Kernel "
                f"states seen: {now['statuses']}")
        finished = now["done"] == now["code"] or now["errors"] > 0
        if now["status"] == "idle" and finished:
            idle_since = idle_since or time.monotonic()
            if time.monotonic() - idle_since > 1.0:
                break
        else:
            idle_since = None
        broken = [e for e in lab.log_errors(log_start) if "/channels" in e]
        if broken:
            raise LabError(f"the server's connection to the kernel of {path} failed while "
                           f"code cell {now['done'] + 1} of {now['code']} ran; the "
                           f"page no longer hears from the kernel. Server log:\n{broken[0]}")
        if time.monotonic() > deadline:
            raise LabError(f"{path} did not finish within {timeout:.0f} s: {now['done']} "
                           f"of {now['code']} code cells ran, kernel {now['status']}")
        time.sleep(0.25)
    seconds = time.perf_counter() - t0
    if started.cpu is not None:
        started.cpu.stop()
    outputs = settle_widgets(page, settle)
    record = page.evaluate(_JS_CELLS)
    return NotebookRun(path=path, seconds=seconds, open_seconds=started.open_seconds,
                       code_cells=now["code"],
                       executed=now["done"], outputs=outputs,
                       kernel_errors=page.evaluate("window.__ttqlab.errors"),
                       page_errors=started.page_errors,
                       sources={c["index"]: c["source"] for c in record["cells"]
                                if c["type"] == "code"},
                       timings=cell_timings(record["cells"], record["executions"],
                                            started.cpu))


def _epoch(date: str) -> float:
    """A Jupyter message date (ISO 8601, UTC) as seconds since the epoch."""
    when = datetime.datetime.fromisoformat(date.replace("Z", "+00:00"))
    if when.tzinfo is None:  # Jupyter's dates are UTC
        when = when.replace(tzinfo=datetime.timezone.utc)
    return when.timestamp()


def cell_timings(cells: list[dict], executions: list[dict],
                 cpu: KernelCpu | None) -> dict[int, tuple[float, float]]:
    """``{cell index: (wall s, kernel CPU s)}`` for every code cell whose execution the page
    recorded from busy to idle (``executions``: execution count, start and end dates, in
    arrival order; a later one with the same count wins: the run after the restart)."""
    by_count = {e["count"]: e for e in executions if e.get("end")}
    out = {}
    for c in cells:
        e = by_count.get(c["count"]) if c["type"] == "code" else None
        if e is None:
            continue
        t0, t1 = _epoch(e["start"]), _epoch(e["end"])
        out[c["index"]] = (t1 - t0, cpu.between(t0, t1) if cpu is not None else 0.0)
    return out


def settle_widgets(page, timeout: float = 60.0) -> list[Output]:
    """Scroll every widget into view and wait until none says 'Loading widget...'."""
    deadline = time.monotonic() + timeout
    # widgets and plotly render lazily: bring each into view once
    page.evaluate("""() => {
      const panel = window.jupyterapp.shell.currentWidget;
      panel.content.widgets.forEach(c => {
        if (c.model.type !== 'code') return;
        for (let i = 0; i < c.model.outputs.length; i++)
          if ('application/vnd.jupyter.widget-view+json' in (c.model.outputs.get(i).data || {}))
            return c.node.scrollIntoView();
      });
    }""")
    while True:
        outputs = [Output(**o) for o in page.evaluate(_JS_REPORT)]
        pending = [o for o in outputs if o.widget and not o.closed and (
            "Loading widget..." in o.problems or o.widget_views == 0
            or any(p["traces"] == 0 or not p["svg"] for p in o.plots))]
        if not pending or time.monotonic() > deadline:
            return outputs
        time.sleep(0.5)


# -------------------------------------------------------------------------- figures

_JS_DRAWN = """
() => {
  // every plotly figure on the page: its title, and per subplot how many data marks the SVG
  // holds (bars, markers, lines, heatmap images): 0 in a subplot = empty axes
  const cells = window.jupyterapp.shell.currentWidget.content.widgets;
  return Array.from(document.querySelectorAll('.js-plotly-plot')).map(p => {
    const cell = cells.findIndex(c => c.node.contains(p));
    const subplots = Array.from(p.querySelectorAll('.cartesianlayer .subplot')).map(sp =>
      Array.from(sp.querySelectorAll('.trace .point path, .trace path.point, .trace path.js-line,'
                                     + ' .hm image'))
        .filter(el => el.tagName === 'image' || (el.getAttribute('d') || '').length > 8)
        .length);
    return {cell, subplots,
            title: (p.layout && p.layout.title && (p.layout.title.text || p.layout.title))
                   || '',
            points: (p.data || []).reduce((n, t) => n + ((t.y || t.z || []).length), 0)};
  });
}
"""


def drawn_figures(page) -> list[dict]:
    """Every plotly figure on the page: ``title``, ``cell`` (index in the notebook),
    ``subplots`` (data marks drawn in each subplot's SVG; 0 = empty axes) and ``points``
    (data points the figure holds)."""
    return page.evaluate(_JS_DRAWN)


# -------------------------------------------------------------------------- explorers

_JS_EXPLORERS = """
() => Array.from(document.querySelectorAll('.jp-OutputArea-output .widget-vbox'))
  .filter(box => box.querySelector('.widget-slider .noUi-handle')
                 && box.querySelector('.js-plotly-plot')
                 && !box.parentElement.closest('.widget-vbox'))
  .map((box, i) => { box.setAttribute('data-ttqlab-explorer', String(i)); return i; })
"""

_JS_SIGNATURE = """
(i) => {
  const box = document.querySelector(`[data-ttqlab-explorer="${i}"]`);
  const gd = box.querySelector('.js-plotly-plot');
  const data = JSON.stringify((gd.data || []).map(t => [t.x, t.y]));
  const paths = Array.from(gd.querySelectorAll('svg.main-svg path'))
                     .map(p => p.getAttribute('d')).join('|');
  const handle = box.querySelector('.noUi-handle');
  return {data, paths, value: handle.getAttribute('aria-valuenow'),
          readout: box.innerText.slice(0, 2000)};
}
"""


def explorers(page) -> list[int]:
    """Mark every explorer on the page (slider + plotly figure); return their indices."""
    return page.evaluate(_JS_EXPLORERS)


def explorer_locator(page, i: int):
    return page.locator(f'[data-ttqlab-explorer="{i}"]')


def figure_signature(page, i: int) -> dict:
    """The plotted data, the SVG paths, the slider value and the text of explorer ``i``."""
    return page.evaluate(_JS_SIGNATURE, i)


def move_slider(page, i: int, to: float | None = None) -> None:
    """Drag the first slider of explorer ``i`` with the mouse to ``to`` (0..1 of its track;
    default: whichever of 0.25 / 0.85 is farther from where the handle is)."""
    box = explorer_locator(page, i)
    box.scroll_into_view_if_needed()
    track = box.locator(".widget-slider .noUi-base").first.bounding_box()
    handle = box.locator(".widget-slider .noUi-handle").first.bounding_box()
    if track is None or handle is None:
        raise LabError(f"explorer {i}: its slider is not visible on the page")
    hx = handle["x"] + handle["width"] / 2
    hy = handle["y"] + handle["height"] / 2
    if to is None:
        at = (hx - track["x"]) / max(track["width"], 1)
        to = 0.25 if abs(at - 0.25) > abs(at - 0.85) else 0.85
    page.mouse.move(hx, hy)
    page.mouse.down()
    page.mouse.move(track["x"] + to * track["width"], hy, steps=8)
    page.mouse.up()


def wait_for_change(page, i: int, before: dict, timeout: float = 60.0) -> dict:
    """Wait until explorer ``i``'s figure differs from ``before``; return the new one."""
    deadline = time.monotonic() + timeout
    while True:
        now = figure_signature(page, i)
        if now["data"] != before["data"] and now["paths"] != before["paths"]:
            time.sleep(0.5)  # let the last of the drag's updates land
            return figure_signature(page, i)
        if time.monotonic() > deadline:
            return now
        time.sleep(0.25)


if __name__ == "__main__":  # pragma: no cover - a manual smoke run
    print(f"free port: {free_port()}; chromium: {chromium_problem() or 'ok'}", file=sys.stderr)
