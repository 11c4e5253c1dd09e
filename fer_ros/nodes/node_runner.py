"""The one ``main()`` shape every fer_ros node shares.

Initialise rclpy, build the node, run it, treat Ctrl-C and external
shutdown as a normal end, turn start-up errors into one line on stderr and
exit code 1, and always release the node and rclpy (Humble/Jazzy pattern of
ros2/demos; ``with rclpy.init()`` exists only in Rolling).
"""

from __future__ import annotations

import sys
from typing import Callable, Optional, Tuple, Type, TypeVar

import rclpy
from rclpy.exceptions import ParameterException
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node

NodeType = TypeVar("NodeType", bound=Node)


def run_node(prog: str, make_node: Callable[[], NodeType],
             errors: Tuple[Type[BaseException], ...],
             run: Callable[[NodeType], None] = rclpy.spin,
             close: Optional[Callable[[NodeType], None]] = None,
             args: Optional[list] = None) -> int:
    """Run a node as a process; return its exit code.

    :param prog: executable name for error lines (``"<prog>: error: ..."``).
    :param make_node: builds the node (after ``rclpy.init``).
    :param errors: start-up errors reported as one line with exit code 1;
        parameter errors always are.
    :param run: what to do with the node (default: spin until shutdown).
    :param close: releases the node's own resources before ``destroy_node``.
    :param args: command-line arguments for rclpy.
    :return: 0 on a normal end, 1 on a reported error.
    """
    rclpy.init(args=args)
    node: Optional[NodeType] = None
    try:
        node = make_node()
        run(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except errors + (ParameterException,) as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        return 1
    finally:
        if node is not None:
            if close is not None:
                close(node)
            node.destroy_node()
        rclpy.try_shutdown()
    return 0
