"""fer_ros: facial emotion recognition for ROS 2 robots.

The modules in this package hold the core logic and never import rclpy;
the ROS 2 nodes live in :mod:`fer_ros.nodes`.
"""

__version__ = "0.1.0"
