"""The package layout keeps its promises.

No import cycles, no TensorFlow on robots, small modules, one model loader,
ROS only in nodes/.
"""

import ast
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Set

REPO = Path(__file__).resolve().parent.parent
#: The project's own Python packages.
PACKAGES = ("fer_ros", "training")
#: Longest module allowed in the robot package, lines.
MAX_MODULE_LINES = 500


def module_name(path: Path) -> str:
    """Dotted module name of a file under the repository."""
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_modules() -> Dict[str, Path]:
    """Every module of the project's packages, by dotted name."""
    return {module_name(path): path for package in PACKAGES
            for path in sorted((REPO / package).rglob("*.py"))}


def imported_modules(path: Path, known: Set[str]) -> Set[str]:
    """Project modules a file imports anywhere (module level or inside functions)."""
    found: Set[str] = set()
    package = module_name(path) if path.name == "__init__.py" else \
        module_name(path).rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1]
                                + ([base] if base else []))
            names = [base] + [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        found.update(name for name in names if name in known)
    return found


def find_cycle(graph: Dict[str, Set[str]]) -> List[str]:
    """Return one import cycle as a list of modules, or [] if there is none."""
    state: Dict[str, int] = {}
    stack: List[str] = []

    def visit(node: str) -> List[str]:
        state[node] = 1
        stack.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                return stack[stack.index(target):] + [target]
            if target not in state:
                cycle = visit(target)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = 2
        return []

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return []


def test_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_among_the_projects_modules():
    modules = project_modules()
    known = set(modules)
    # A package's __init__ is not an edge target of its own submodules.
    graph = {name: {target for target in imported_modules(path, known)
                    if target != name and not name.startswith(f"{target}.")}
             for name, path in modules.items()}
    assert find_cycle(graph) == []


def test_every_robot_module_imports_without_tensorflow_or_keras():
    """What tools/setup.sh installs (no TensorFlow) is enough to import all of fer_ros."""
    names = sorted(name for name in project_modules() if name.startswith("fer_ros"))
    script = (
        "import importlib, importlib.abc, sys\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('tensorflow', 'keras', 'tf_keras'):\n"
        "            raise ImportError(f'blocked: {name}')\n"
        "sys.meta_path.insert(0, Block())\n"
        f"for name in {names!r}:\n"
        "    importlib.import_module(name)\n"
        "print(len(sys.modules))\n")
    completed = subprocess.run([sys.executable, "-c", script], cwd=REPO,
                               capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-3000:]


def test_robot_modules_are_small():
    long = {name: n for name, path in project_modules().items()
            if name.startswith("fer_ros")
            and (n := len(path.read_text().splitlines())) > MAX_MODULE_LINES}
    assert long == {}


def test_one_place_loads_models():
    """Only fer_ros/model_files.py creates LiteRT interpreters or loads .keras files."""
    offenders = []
    for name, path in project_modules().items():
        if not name.startswith("fer_ros") or name == "fer_ros.model_files":
            continue
        text = path.read_text()
        for marker in ("ai_edge_litert", "Interpreter(", "load_model(", "tf.lite"):
            if marker in text:
                offenders.append(f"{name}: {marker}")
    assert offenders == []


def test_ros_only_in_nodes():
    """Core modules stay ROS-free so they test and run without ROS."""
    for name, path in project_modules().items():
        if not name.startswith("fer_ros") or name.startswith("fer_ros.nodes"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            assert not any(n.split(".")[0] in ("rclpy", "sensor_msgs", "rcl_interfaces")
                           or n == "fer_ros.msg" for n in names), f"{name} imports {names}"
