"""Pictures: the graph as Graphviz DOT (SVG or PNG when ``dot`` is installed), and training
curves as a PNG (matplotlib, an optional dependency)."""

import io
import os
import shutil
import subprocess
from pathlib import Path

from .files import check_file_name, write_atomically
from .graph import Graph
from .node import Variable


def to_dot(graph):
    """The graph in DOT: nodes labelled with their names and per-sample shapes, as the
    article draws them; inputs, parameters and operators in different shapes and colours."""
    _check_graph(graph, "to_dot")
    lines = [DOT_FIRST_LINE, '  rankdir="BT";', '  node [fontname="Helvetica"];']
    ids = {node: f"n{i}" for i, node in enumerate(graph.nodes)}
    for node, ident in ids.items():
        shape = "dim unknown until welded" if node.dim is None else f"{node.dim[0]}x{node.dim[1]}"
        label = f"{_quoted(node.name)}\\n{shape}"
        if isinstance(node, Variable):
            style = ('shape=box, style=filled, fillcolor="#cfe2f3"' if not node.is_input
                     else 'shape=box, style=filled, fillcolor="#d9ead3"')
        else:
            style = 'shape=ellipse, style=filled, fillcolor="#fff2cc"'
        lines.append(f'  {ident} [label="{label}", {style}];')
    for node, ident in ids.items():
        lines.extend(f"  {ids[parent]} -> {ident};" for parent in node.parents)
    lines.append("}")
    return "\n".join(lines) + "\n"


def _check_graph(graph, caller):
    if not isinstance(graph, Graph):
        hint = " (pass its graph: node.graph)" if hasattr(graph, "graph") else ""
        raise TypeError(f"{caller}: expected a fastgraph Graph, got "
                        f"{type(graph).__name__}{hint}")


def _quoted(text):
    """``text`` safe inside a DOT string: a name with a quote would end the label."""
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


GRAPH_SUFFIXES = (".dot", ".svg", ".png")


def _prefix(option):
    return f"{option} " if option else ""


def check_graph_path(path, option=None):
    """ValueError unless ``path`` names a format :func:`write_graph` writes."""
    if Path(path).suffix.lower() not in GRAPH_SUFFIXES:  # G.DOT too
        raise ValueError(f"{_prefix(option)}{path}: the graph can be written as .dot, .svg "
                         "or .png")


def check_plot_path(path, option=None):
    """ValueError unless matplotlib is installed and can write the format ``path`` names
    here (a tiny figure is drawn in it: .pgf, say, needs a LaTeX that may be missing)."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise ValueError(f"{_prefix(option)}{path}: plotting needs matplotlib: "
                         "pip install 'fastgraph[plot]'") from None
    formats = Figure().canvas.get_supported_filetypes()
    kind = Path(path).suffix.lstrip(".").lower()
    if kind not in formats:
        raise ValueError(f"{_prefix(option)}{path}: the curves can be written as "
                         f"{', '.join('.' + name for name in sorted(formats))}")
    try:
        probe = Figure(figsize=(1, 1))
        probe.text(0.5, 0.5, "1")  # text is what a format may need a program for
        probe.savefig(io.BytesIO(), format=kind)
    except Exception as error:  # noqa: BLE001  (a backend's own failure, whatever its type)
        raise ValueError(f"{_prefix(option)}{path}: matplotlib cannot write .{kind} here "
                         f"({type(error).__name__}: {str(error)[:200]})") from None


def graph_destination(path):
    """The file :func:`write_graph` writes for ``path``: ``path`` itself, or beside it with
    ``.dot`` when Graphviz's ``dot`` program is missing for an .svg or .png."""
    path = Path(path)
    if path.suffix.lower() == ".dot" or shutil.which("dot") is not None:
        return path
    return path.with_suffix(".dot")


#: The first line of every DOT file fastgraph writes: a fallback may replace only such a file.
DOT_FIRST_LINE = "digraph fastgraph {"


def check_fallback(fallback, path, option=None):
    """ValueError unless the DOT ``fallback`` written for ``path`` (Graphviz missing) may be
    written: it does not exist, or fastgraph wrote it (its first line says so). A file of the
    user's of that name is never replaced by a side effect of asking for an image."""
    try:
        with open(fallback, "rb") as stream:
            first = stream.readline(64).rstrip(b"\r\n")
    except FileNotFoundError:
        return
    except OSError as error:
        raise ValueError(f"{_prefix(option)}{path}: {fallback}, where its DOT source would go "
                         f"(Graphviz 'dot' is not installed), cannot be read ({error})") from None
    if first != DOT_FIRST_LINE.encode():
        raise ValueError(f"{_prefix(option)}{path}: Graphviz 'dot' is not installed, and "
                         f"{fallback}, where its DOT source would go instead, is a file "
                         f"fastgraph did not write: not replaced (install Graphviz, or name "
                         f"another .dot file)")


def write_graph(graph, path):
    """Write the graph to ``path``: ``.dot`` as DOT; ``.svg``/``.png`` rendered by Graphviz.

    Returns ``(written_path, note)``. Without the ``dot`` program, DOT is written beside
    ``path`` (same name, ``.dot``) and ``note`` says so; a file of that name that
    fastgraph did not write is not replaced (ValueError, see :func:`check_fallback`). Files
    are written whole (a temporary renamed into place), and missing folders are made.
    """
    _check_graph(graph, "write_graph")
    if not isinstance(path, (str, os.PathLike)) or "\0" in os.fspath(path):
        raise TypeError(f"write_graph: path must be a file name (a str or os.PathLike without "
                        f"NUL), got {type(path).__name__} {path!r:.60}")
    path = Path(path)
    source = to_dot(graph)
    if path.suffix.lower() == ".dot":
        write_atomically(path, source.encode())
        return path, None
    check_graph_path(path)
    dot = shutil.which("dot")
    if dot is None:
        fallback = path.with_suffix(".dot")
        check_fallback(fallback, path)
        write_atomically(fallback, source.encode())
        return fallback, (f"Graphviz 'dot' is not installed, so {path.name} was not rendered; "
                          f"wrote the DOT source to {fallback} instead")
    done = subprocess.run([dot, f"-T{path.suffix[1:].lower()}"], input=source.encode(),
                          capture_output=True)
    if done.returncode != 0:
        raise OSError(f"{path}: Graphviz 'dot' failed: "
                      f"{done.stderr.decode(errors='replace').strip()[:300]}")
    write_atomically(path, done.stdout)
    return path, None


def plot_history(history, path):
    """Loss and accuracy per epoch, side by side, in the format ``path``'s suffix names (PNG
    without one, its name then ending in .png). Returns the path written; the file is
    written whole and missing folders are made."""
    try:
        history = list(history)
    except TypeError:  # (None: "'NoneType' object is not iterable")
        raise TypeError(f"plot_history: history must be the epochs' records "
                        f"(SimpleTrainer.train's list), got {type(history).__name__}") from None
    if not history:
        raise ValueError(f"{path}: no epochs to plot (the history is empty)")
    check_file_name(path, "plot_history: path")
    if os.path.isdir(path):  # (it was given .png and written beside the folder)
        raise ValueError(f"plot_history: path {os.fspath(path)!r} is a folder, expected a "
                         "file name")
    path = Path(path)
    if not path.suffix:  # "curves", or "curves." (whose suffix is "" too: not "curves..png")
        path = path.with_name(path.name.rstrip(".") + ".png")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as error:
        raise ImportError("plotting needs matplotlib: pip install 'fastgraph[plot]'") from error
    for number, record in enumerate(history):
        missing = [key for key in ("epoch", "loss", "train_accuracy")
                   if not isinstance(record, dict) or key not in record]
        if missing:
            raise ValueError(f"{path}: record {number} of the history has no "
                             f"{', '.join(missing)} (SimpleTrainer.train's records have them)")
    epochs = [record["epoch"] for record in history]
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    left.plot(epochs, [record["loss"] for record in history], marker="o")
    left.set(title="training loss", xlabel="epoch", ylabel="cross-entropy")
    right.plot(epochs, [record["train_accuracy"] for record in history], marker="o",
               label="train")
    if all("test_accuracy" in record for record in history):
        right.plot(epochs, [record["test_accuracy"] for record in history], marker="o",
                   label="test")
    right.set(title="accuracy", xlabel="epoch", ylabel="accuracy")
    right.legend()
    for axes in (left, right):
        axes.grid(alpha=0.3)
    figure.tight_layout()
    image = io.BytesIO()
    try:
        figure.savefig(image, dpi=100, format=path.suffix[1:].lower())
    except ValueError as error:  # "Format 'v2' is not supported": say which file
        raise ValueError(f"{path}: matplotlib cannot write this format ({error})") from None
    finally:
        plt.close(figure)
    write_atomically(path, image.getvalue())
    return path
