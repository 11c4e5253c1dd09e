"""Offline session analysis: the ``fer-analyze`` product.

A recorded session (a video, a rosbag2 recording, or the emotion_recorder's
``emotions.jsonl``) runs through exactly the fer node's pipeline and becomes
per-person (re-identified) and per-face tables, statistics, figures and a
self-contained HTML report.
Pure Python: no rclpy.
"""
