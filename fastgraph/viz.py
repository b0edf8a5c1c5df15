"""Pictures: the graph as Graphviz DOT (SVG or PNG when ``dot`` is installed), and training
curves as a PNG (matplotlib, an optional dependency)."""

import shutil
import subprocess
from pathlib import Path

from .node import Variable


def to_dot(graph):
    """The graph in DOT: nodes labelled with their names and per-sample shapes, as the
    article draws them; inputs, parameters and operators in different shapes and colours."""
    lines = ["digraph fastgraph {", '  rankdir="BT";', '  node [fontname="Helvetica"];']
    ids = {node: f"n{i}" for i, node in enumerate(graph.nodes)}
    for node, ident in ids.items():
        label = f"{_quoted(node.name)}\\n{node.dim[0]}x{node.dim[1]}"
        if isinstance(node, Variable):
            style = ('shape=box, style=filled, fillcolor="#cfe2f3"' if node.trainable
                     else 'shape=box, style=filled, fillcolor="#d9ead3"')
        else:
            style = 'shape=ellipse, style=filled, fillcolor="#fff2cc"'
        lines.append(f'  {ident} [label="{label}", {style}];')
    for node, ident in ids.items():
        lines.extend(f"  {ids[parent]} -> {ident};" for parent in node.parents)
    lines.append("}")
    return "\n".join(lines) + "\n"


def _quoted(text):
    """``text`` safe inside a DOT string: a name with a quote would end the label."""
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


GRAPH_SUFFIXES = (".dot", ".svg", ".png")


def _prefix(option):
    return f"{option} " if option else ""


def check_graph_path(path, option=None):
    """ValueError unless ``path`` names a format :func:`write_graph` writes."""
    if Path(path).suffix not in GRAPH_SUFFIXES:
        raise ValueError(f"{_prefix(option)}{path}: the graph can be written as .dot, .svg "
                         "or .png")


def check_plot_path(path, option=None):
    """ValueError unless matplotlib is installed and writes the format ``path`` names."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise ValueError(f"{_prefix(option)}{path}: plotting needs matplotlib: "
                         "pip install 'fastgraph[plot]'") from None
    formats = Figure().canvas.get_supported_filetypes()
    if Path(path).suffix.lstrip(".").lower() not in formats:
        raise ValueError(f"{_prefix(option)}{path}: the curves can be written as "
                         f"{', '.join('.' + name for name in sorted(formats))}")


def write_graph(graph, path):
    """Write the graph to ``path``: ``.dot`` as DOT; ``.svg``/``.png`` rendered by Graphviz.

    Returns ``(written_path, note)``. Without the ``dot`` program, DOT is written beside
    ``path`` (same name, ``.dot``) and ``note`` says so.
    """
    path = Path(path)
    source = to_dot(graph)
    if path.suffix == ".dot":
        path.write_text(source)
        return path, None
    check_graph_path(path)
    dot = shutil.which("dot")
    if dot is None:
        fallback = path.with_suffix(".dot")
        fallback.write_text(source)
        return fallback, (f"Graphviz 'dot' is not installed, so {path.name} was not rendered; "
                          f"wrote the DOT source to {fallback} instead")
    done = subprocess.run([dot, f"-T{path.suffix[1:]}", "-o", str(path)],
                          input=source.encode(), capture_output=True)
    if done.returncode != 0:
        raise OSError(f"{path}: Graphviz 'dot' failed: "
                      f"{done.stderr.decode(errors='replace').strip()[:300]}")
    return path, None


def plot_history(history, path):
    """Loss and accuracy per epoch, side by side, as a PNG."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as error:
        raise ImportError("plotting needs matplotlib: pip install 'fastgraph[plot]'") from error
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
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return Path(path)
