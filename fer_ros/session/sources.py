"""The inputs of a session analysis: videos and rosbag2 recordings as one frame stream.

:func:`open_source` turns a path into a :class:`~fer_ros.session.data.SessionSource`
that yields :class:`fer_ros.video_io.Frame` objects, whatever the input.

rosbag2 recordings (sqlite3 or mcap) are read with the pure-Python
``rosbags`` package, so a recording made on the robot can be analysed on
any machine.  A recording is a rosbag2 folder (with ``metadata.yaml``) or a
bare ``.db3`` / ``.mcap`` file.  Messages of a ``sensor_msgs/Image`` or
``sensor_msgs/CompressedImage`` topic become frames; images are decoded
only when a frame is actually used.  Every problem raises
:class:`BagError` or :class:`~fer_ros.session.data.SessionError` with one
line naming the input and what is wrong with it.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Generator, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from fer_ros.image_conversion import compressed_msg_to_bgr, image_msg_to_bgr
from fer_ros.session.bag_salvage import SalvagedBag, SalvageError, expected_count, salvage
from fer_ros.session.data import InputDescription, SessionError, SessionSource
from fer_ros.video_io import IMAGE_SUFFIXES, Frame, FrameSource, SourceError

#: File suffixes taken as videos when a folder is given.
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv")


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


def decode_image(message: Any, msgtype: str) -> np.ndarray:
    """Decode an Image or CompressedImage message to a BGR uint8 frame.

    :raises ImageConversionError: when the message cannot be decoded.
    """
    if IMAGE_MESSAGE_TYPES[msgtype] == "compressed":
        return compressed_msg_to_bgr(message)
    return image_msg_to_bgr(message)


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


class BagSessionSource:
    """One image topic of a rosbag2 recording as a session source.

    A recording ``rosbags`` cannot open (an mcap file without its end, a
    sqlite3 file with a damaged tail) is read record by record up to the
    damage (:mod:`~fer_ros.session.bag_salvage`); one whose messages stop
    making sense part-way is read up to there.  Either way ``damage`` says
    what happened, and the analysis reports it as a warning.

    :param path: the rosbag2 folder or its ``.db3`` / ``.mcap`` file.
    :param topic: the image topic; may be omitted when there is exactly one.
    :raises BagError: when the recording is unreadable or empty, has no
        image topic, lacks ``topic``, or has several image topics and none
        was chosen.
    """

    def __init__(self, path: Path, topic: Optional[str] = None) -> None:
        self.path = Path(path)
        self.damage = ""
        self.salvaged: Optional[SalvagedBag] = None
        try:
            reader = _open_reader(self.path)
        except BagError as error:
            self.salvaged = _salvage(self.path, error)
            self.storage = self.salvaged.storage
            all_topics = dict(self.salvaged.topics)
            duration_ns = self.salvaged.end_ns - self.salvaged.start_ns
        else:
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
        if self.salvaged is not None:
            folder = self.path if self.path.is_dir() else None
            self.frame_count = max(self.frame_count, expected_count(folder, self.topic) or 0)
        self.description = InputDescription(
            str(self.path), self.path.stem if self.path.is_file() else self.path.name,
            "rosbag2", self.frame_rate, self.frame_count, self.topic, self.msgtype,
            self.storage)

    def frames(self) -> Iterator[Frame]:
        """Yield the topic's messages in recording order (images decoded when read).

        A frame's ``stamp`` is its header stamp (the recording time where
        that is unset); ``time_s`` counts from the first frame's stamp.
        Reading stops at the first message that cannot be read or
        deserialised, and ``damage`` says where.
        """
        self.damage = self.salvaged.damage if self.salvaged is not None else ""
        first_ns: Optional[int] = None
        messages = self._messages()
        index = 0
        while True:
            try:
                log_ns, message = next(messages)
            except StopIteration:
                return
            except Exception as error:  # rosbags raises many types for damaged data
                messages.close()
                self.damage = (f"the recording is damaged after message {index}: "
                               f"{type(error).__name__}: {_one_line(error)}")
                return
            stamp_ns = header_stamp_ns(message, log_ns)
            first_ns = stamp_ns if first_ns is None else first_ns
            yield Frame(index, (stamp_ns - first_ns) * 1e-9, stamp_ns * 1e-9,
                        functools.partial(decode_image, message, self.msgtype))
            index += 1

    def _messages(self) -> Generator[Tuple[int, Any], None, None]:
        """Yield ``(log time ns, deserialised message)`` of the topic."""
        if self.salvaged is not None:
            from rosbags.typesys import Stores, get_typestore

            store = get_typestore(Stores.LATEST)
            for log_ns, raw in self.salvaged.messages(self.topic):
                yield log_ns, store.deserialize_cdr(raw, self.msgtype)
            return
        reader = _open_reader(self.path)
        try:
            connections = [c for c in reader.connections if c.topic == self.topic]
            for connection, log_ns, raw in reader.messages(connections=connections):
                yield int(log_ns), reader.deserialize(raw, connection.msgtype)
        finally:
            reader.close()

    def close(self) -> None:
        """Nothing to release: each :meth:`frames` call opens and closes the bag."""


def _salvage(path: Path, error: BagError) -> SalvagedBag:
    """Read a recording that ``rosbags`` refused record by record, or re-raise its error.

    :param path: the rosbag2 folder or storage file.
    :param error: why ``rosbags`` refused it.
    :return: what the storage file holds up to its damage.
    :raises BagError: ``error`` when there is no single storage file or no message in it.
    """
    files = ([p for p in sorted(path.iterdir()) if p.suffix.lower() in BAG_FILE_SUFFIXES]
             if path.is_dir() else [path])
    if len(files) != 1 or not files[0].is_file():
        raise error
    try:
        salvaged = salvage(files[0])
    except (SalvageError, OSError):
        raise error from None
    if not any(count for _, count in salvaged.topics.values()):
        raise error
    if not salvaged.damage:
        salvaged.damage = "rosbags cannot open it; read record by record"
    return salvaged


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


class VideoSessionSource:
    """A video file as a session source.

    :param path: the video file.
    :raises SessionError: when it is not a readable video.
    """

    def __init__(self, path: Path) -> None:
        if path.suffix.lower() in IMAGE_SUFFIXES:
            raise SessionError(f"{path}: is a still image; give a video, a folder of "
                               "videos or a rosbag2 recording")
        try:
            self._video = FrameSource(str(path))
        except SourceError as error:
            raise SessionError(str(error)) from None
        self.description = InputDescription(
            str(path), path.stem, "video", self._video.frame_rate, self._video.frame_count)
        self.damage = ""  # OpenCV stops at damage without saying why

    def frames(self) -> Iterator[Frame]:
        """Yield every frame of the video."""
        self._video.rewind()
        yield from self._video.frames()

    def close(self) -> None:
        """Release the video file."""
        self._video.close()


def expand_inputs(paths: Sequence[Path]) -> List[Path]:
    """Resolve the command line's inputs into one path per session.

    A folder that is not a rosbag2 recording stands for the videos and
    recordings directly inside it, in name order.

    :param paths: files and folders as given.
    :return: one path per session.
    :raises SessionError: for a missing path or a folder with nothing to analyse.
    """
    sessions: List[Path] = []
    for path in paths:
        if not path.exists():
            raise SessionError(f"{path}: no such file or folder")
        if path.is_dir() and not is_rosbag2(path):
            found = sorted(p for p in path.iterdir() if
                           (p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES) or
                           (p.is_dir() and is_rosbag2(p)))
            if not found:
                raise SessionError(f"{path}: folder holds no videos ({', '.join(VIDEO_SUFFIXES)})"
                                   " and no rosbag2 recordings")
            sessions.extend(found)
        else:
            sessions.append(path)
    return sessions


def open_source(path: Path, topic: Optional[str] = None) -> SessionSource:
    """Open a video or rosbag2 input.

    :param path: video file, rosbag2 folder, or .db3 / .mcap file.
    :param topic: image topic of a recording (ignored for videos).
    :return: the source.
    :raises SessionError, BagError: when it cannot be analysed.
    """
    if not path.exists():
        raise SessionError(f"{path}: no such file or folder")
    if is_rosbag2(path):
        return BagSessionSource(path, topic)
    if path.is_dir():
        raise SessionError(f"{path}: folder is not a rosbag2 recording (no metadata.yaml; "
                           "give its .mcap or .db3 file to read an interrupted recording)")
    return VideoSessionSource(path)
