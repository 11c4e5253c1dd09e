"""Frames of a rosbag2 recording (sqlite3 or mcap), read without ROS.

Uses the pure-Python ``rosbags`` package, so a recording made on the robot
can be analysed on any machine.  A recording is a rosbag2 folder (with
``metadata.yaml``) or a bare ``.db3`` / ``.mcap`` file.  Messages of a
``sensor_msgs/Image`` or ``sensor_msgs/CompressedImage`` topic become
frames; images are decoded only when a frame is actually used
(:meth:`BagFrame.read_image`).  Every problem raises :class:`BagError`
with one line naming the recording and what is wrong with it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

import numpy as np

from fer_ros.image_conversion import compressed_msg_to_bgr, image_msg_to_bgr

#: Image message types that can be analysed -> how their payload is decoded.
IMAGE_MESSAGE_TYPES = {"sensor_msgs/msg/Image": "raw",
                       "sensor_msgs/msg/CompressedImage": "compressed"}
#: Suffixes of bare rosbag2 storage files (readable without metadata.yaml).
BAG_FILE_SUFFIXES = (".db3", ".mcap")
#: Frame rate assumed when a recording has a single image, frames/s.
FALLBACK_FRAME_RATE = 30.0


class BagError(RuntimeError):
    """A recording cannot be read, or has no usable image topic."""


@dataclass(frozen=True)
class ImageTopic:
    """An image topic of a recording.

    :param name: topic name, e.g. ``/camera/image_raw``.
    :param msgtype: ``sensor_msgs/msg/Image`` or ``.../CompressedImage``.
    :param message_count: messages recorded on it.
    """

    name: str
    msgtype: str
    message_count: int


@dataclass
class BagFrame:
    """One image message of the chosen topic.

    :param index: message number on the topic, from 0.
    :param stamp_ns: acquisition time from the message header, nanoseconds
        (the bag's receive time when the header stamp is unset).
    :param message: the deserialised message (decoded lazily).
    :param msgtype: its message type.
    """

    index: int
    stamp_ns: int
    message: Any
    msgtype: str

    @property
    def stamp(self) -> float:
        """Acquisition time, seconds."""
        return self.stamp_ns * 1e-9

    def read_image(self) -> np.ndarray:
        """Decode the message to a BGR uint8 frame.

        :return: [H,W,3] uint8.
        :raises ImageConversionError: when the message cannot be decoded.
        """
        if IMAGE_MESSAGE_TYPES[self.msgtype] == "compressed":
            return compressed_msg_to_bgr(self.message)
        return image_msg_to_bgr(self.message)


def is_rosbag2(path: Path) -> bool:
    """Tell whether a path is a rosbag2 folder or a bare ``.db3`` / ``.mcap`` file.

    :param path: any path.
    :return: whether it looks like a recording (it may still be unreadable).
    """
    if path.is_dir():
        return (path / "metadata.yaml").is_file()
    return path.suffix.lower() in BAG_FILE_SUFFIXES


def header_stamp_ns(message: Any, fallback_ns: int) -> int:
    """Return a message's header stamp in nanoseconds, or ``fallback_ns`` if unset.

    :param message: a message with ``header.stamp.sec`` / ``.nanosec``.
    :param fallback_ns: the time to use when the stamp is zero or missing.
    :return: nanoseconds.
    """
    stamp = getattr(getattr(message, "header", None), "stamp", None)
    if stamp is None:
        return fallback_ns
    value = int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)
    return value if value > 0 else fallback_ns


def _open_reader(path: Path) -> Any:
    """Open a ``rosbags`` AnyReader; the caller closes it."""
    try:
        from rosbags.highlevel import AnyReader
        from rosbags.typesys import Stores, get_typestore
    except ImportError:
        raise BagError(f"{path}: reading rosbag2 needs the 'rosbags' package "
                       "(pip install rosbags)") from None
    if not path.exists():
        raise BagError(f"{path}: no such file or folder")
    try:
        reader = AnyReader([path], default_typestore=get_typestore(Stores.LATEST))
        reader.open()
    except Exception as error:  # rosbags raises many types for broken bags
        raise BagError(f"{path}: not a readable rosbag2 recording "
                       f"({_one_line(error)})") from None
    return reader


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return text or type(error).__name__


class BagFrameSource:
    """The frames of one image topic of a rosbag2 recording.

    :param path: the rosbag2 folder or its ``.db3`` / ``.mcap`` file.
    :param topic: the image topic; may be omitted when there is exactly one.
    :raises BagError: when the recording is unreadable or empty, has no
        image topic, lacks ``topic``, or has several image topics and none
        was chosen.
    """

    def __init__(self, path: Path, topic: Optional[str] = None) -> None:
        self.path = Path(path)
        reader = _open_reader(self.path)
        try:
            self.storage = _storage_name(reader)
            all_topics = {name: (info.msgtype or "?", info.msgcount)
                          for name, info in reader.topics.items()}
            duration_ns = reader.duration if reader.message_count else 0
        finally:
            reader.close()
        self.image_topics = list_image_topics(all_topics)
        chosen = choose_topic(self.path, all_topics, self.image_topics, topic)
        self.topic, self.msgtype = chosen.name, chosen.msgtype
        self.frame_count = chosen.message_count
        self.frame_rate = _frame_rate(self.frame_count, duration_ns)
        self.kind = "rosbag2"

    def frames(self) -> Iterator[BagFrame]:
        """Yield the topic's messages in recording order (images not decoded).

        :raises BagError: when a message cannot be deserialised.
        """
        reader = _open_reader(self.path)
        try:
            connections = [c for c in reader.connections if c.topic == self.topic]
            messages = reader.messages(connections=connections)
            for index, (connection, log_ns, raw) in enumerate(messages):
                try:
                    message = reader.deserialize(raw, connection.msgtype)
                except Exception as error:  # rosbags' errors vary by storage
                    raise BagError(f"{self.path}: message {index} on {self.topic} "
                                   f"cannot be deserialised ({_one_line(error)})") from None
                yield BagFrame(index, header_stamp_ns(message, int(log_ns)), message,
                               connection.msgtype)
        finally:
            reader.close()

    def close(self) -> None:
        """Nothing to release: each :meth:`frames` call opens and closes the bag."""


def list_image_topics(topics: Dict[str, tuple]) -> List[ImageTopic]:
    """Pick the image topics among ``{name: (msgtype, message count)}``.

    :param topics: every topic of a recording.
    :return: the Image / CompressedImage topics, sorted by name.
    """
    return [ImageTopic(name, msgtype, int(count))
            for name, (msgtype, count) in sorted(topics.items())
            if msgtype in IMAGE_MESSAGE_TYPES]


def choose_topic(path: Path, topics: Dict[str, tuple], image_topics: List[ImageTopic],
                 topic: Optional[str]) -> ImageTopic:
    """Choose the image topic to analyse.

    :param path: the recording (for messages).
    :param topics: every topic, ``{name: (msgtype, message count)}``.
    :param image_topics: the image topics among them.
    :param topic: the user's choice, or None.
    :return: the chosen topic, which has messages.
    :raises BagError: with one line saying why no topic can be used.
    """
    candidates = ", ".join(t.name for t in image_topics)
    if not topics or sum(int(count) for _, count in topics.values()) == 0:
        raise BagError(f"{path}: the recording is empty (no messages)")
    if not image_topics:
        found = ", ".join(f"{name} ({msgtype})" for name, (msgtype, _) in sorted(topics.items()))
        raise BagError(f"{path}: no sensor_msgs/Image or CompressedImage topic; "
                       f"topics: {found}")
    if topic is not None:
        by_name = {t.name: t for t in image_topics}
        key = topic if topic in by_name else "/" + topic.lstrip("/")
        if key not in by_name:
            raise BagError(f"{path}: no image topic {topic!r}; image topics: {candidates}")
        chosen = by_name[key]
    elif len(image_topics) > 1:
        raise BagError(f"{path}: several image topics, choose one with --topic: "
                       f"{candidates}")
    else:
        chosen = image_topics[0]
    if chosen.message_count == 0:
        raise BagError(f"{path}: image topic {chosen.name} has no messages")
    return chosen


def _storage_name(reader: Any) -> str:
    suffixes = {p.suffix.lower() for r in reader.readers
                for p in ([r.path] if not r.path.is_dir() else r.path.iterdir())}
    if ".mcap" in suffixes:
        return "mcap"
    return "sqlite3" if ".db3" in suffixes else "unknown"


def _frame_rate(frame_count: int, duration_ns: int) -> float:
    """Mean message rate, frames/s (recording-wide duration, an estimate)."""
    if frame_count < 2 or duration_ns <= 0:
        return FALLBACK_FRAME_RATE
    return (frame_count - 1) / (duration_ns * 1e-9)
