"""Thin rclpy nodes over the fer_ros core (the only modules importing rclpy)."""
