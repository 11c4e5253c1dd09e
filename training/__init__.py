"""Offline training and baseline scripts for fer_ros (not installed on robots)."""
