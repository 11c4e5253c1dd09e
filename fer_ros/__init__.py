"""fer_ros: facial emotion recognition for ROS 2 robots.

The modules in this package hold the core logic and never import rclpy;
the ROS 2 nodes live in :mod:`fer_ros.nodes`.  The generated message code
(``fer_ros.msg``) is installed next to this package by CMake; extending
``__path__`` lets a source checkout find it in the environment too.
"""

from pkgutil import extend_path

__path__ = extend_path(__path__, __name__)
__version__ = "0.1.0"
