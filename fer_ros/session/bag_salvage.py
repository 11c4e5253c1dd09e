"""Reading what a damaged rosbag2 storage file holds, up to the damage.

A recorder killed mid-write leaves an mcap file without its summary and
end marker, or a sqlite3 file whose last pages are missing; ``rosbags``
refuses both.  :func:`salvage` reads such a file the simple way, record by
record from the start, and stops at the first damage:

- mcap: the records of the data section in file order (chunks decompressed
  and checked against their CRC), schemas and channels as they come;
- sqlite3: the ``topics`` table, then ``messages`` in row order, with the
  schema read leniently (``writable_schema``) because the indexes that
  rosbag2 creates last lie in the lost tail.

Messages come back as raw CDR bytes; the caller deserialises them with a
``rosbags`` type store.

References: the MCAP format specification (https://mcap.dev/spec), the
rosbag2 sqlite3 schema (``rosbag2_storage_default_plugins``).
"""

from __future__ import annotations

import sqlite3
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Callable, Dict, Iterator, List, Optional, Tuple

#: First and last 8 bytes of an mcap file.
MCAP_MAGIC = b"\x89MCAP0\r\n"

#: mcap record opcodes used here.
MCAP_FOOTER, MCAP_SCHEMA, MCAP_CHANNEL, MCAP_MESSAGE, MCAP_CHUNK = 0x02, 0x03, 0x04, 0x05, 0x06
MCAP_DATA_END = 0x0F

#: Largest mcap record or chunk accepted, bytes (a damaged length field
#: would otherwise ask for exabytes).
MAX_RECORD_BYTES = 1 << 31


class SalvageError(ValueError):
    """The file is not a storage file that can be read record by record."""


class DamageError(ValueError):
    """The data stops making sense here (the message says where and why)."""


@dataclass
class SalvagedBag:
    """What a damaged storage file holds before its damage.

    :param path: the storage file.
    :param storage: ``mcap`` or ``sqlite3``.
    :param topics: topic name -> ``(message type, messages before the damage)``.
    :param damage: where and why reading stopped ("" when the file ended cleanly).
    :param start_ns: log time of the first message read, ns (0 when none).
    :param end_ns: log time of the last message read, ns (0 when none).
    """

    path: Path
    storage: str
    topics: Dict[str, Tuple[str, int]] = field(default_factory=dict)
    damage: str = ""
    start_ns: int = 0
    end_ns: int = 0

    def note_time(self, log_ns: int) -> None:
        """Widen the time span read by one message's log time."""
        self.start_ns = min(self.start_ns, log_ns) if self.start_ns else log_ns
        self.end_ns = max(self.end_ns, log_ns)

    def messages(self, topic: str) -> Iterator[Tuple[int, bytes]]:
        """Yield ``(log time in ns, CDR bytes)`` of one topic up to the damage, in file order."""
        if self.storage == "mcap":
            for _, _, channel_topic, log_ns, data in _mcap_messages(self.path):
                if channel_topic == topic:
                    yield log_ns, data
        else:
            yield from _sqlite_messages(self.path, topic)


def salvage(path: Path) -> SalvagedBag:
    """Read a damaged ``.mcap`` or ``.db3`` file as far as it goes.

    :param path: the storage file.
    :return: its topics with the messages before the damage.
    :raises SalvageError: when the file is neither, or nothing in it is readable.
    """
    suffix = path.suffix.lower()
    if suffix == ".mcap":
        bag = SalvagedBag(path, "mcap")
        counts: Dict[str, List] = {}
        try:
            for _, msgtype, topic, log_ns, _ in _mcap_messages(path):
                counts.setdefault(topic, [msgtype, 0])[1] += 1
                bag.note_time(log_ns)
        except DamageError as error:
            bag.damage = str(error)
        bag.topics = {topic: (msgtype, count) for topic, (msgtype, count) in counts.items()}
        return bag
    if suffix == ".db3":
        return _sqlite_salvage(path)
    raise SalvageError(f"{path}: not an .mcap or .db3 file")


# --- mcap ------------------------------------------------------------------------

def _zstd_decompress(data: bytes) -> bytes:
    try:
        from compression import zstd  # type: ignore[import-not-found]  # Python >= 3.14
    except ImportError:
        try:
            from backports import zstd  # type: ignore[import-not-found,no-redef]
        except ImportError:
            import zstandard as zstd  # type: ignore[import-not-found,no-redef]
    return zstd.decompress(data)


def _lz4_decompress(data: bytes) -> bytes:
    from lz4.frame import decompress  # type: ignore[import-not-found,import-untyped]

    return decompress(data)


#: Chunk compressions -> decompressor (the imports happen on first use).
DECOMPRESSORS: Dict[str, Callable[[bytes], bytes]] = {
    "": lambda data: data, "zstd": _zstd_decompress, "lz4": _lz4_decompress}


class _Fields:
    """Little-endian fields of one mcap record."""

    def __init__(self, data: bytes) -> None:
        self.data, self.at = data, 0

    def take(self, size: int) -> bytes:
        if size < 0 or self.at + size > len(self.data):
            raise DamageError("a record is shorter than its fields")
        chunk = self.data[self.at:self.at + size]
        self.at += size
        return chunk

    def number(self, fmt: str) -> int:
        return int(struct.unpack("<" + fmt, self.take(struct.calcsize(fmt)))[0])

    def string(self) -> str:
        try:
            return self.take(self.number("I")).decode("utf-8")
        except UnicodeDecodeError:
            raise DamageError("a name is not UTF-8") from None

    def rest(self) -> bytes:
        return self.take(len(self.data) - self.at)


def _records(stream: BinaryIO, offset: int = 0) -> Iterator[Tuple[int, bytes, int]]:
    """Yield ``(opcode, body, byte offset)`` until the data section ends or breaks."""
    while True:
        position = offset + stream.tell()
        head = stream.read(9)
        if not head:
            raise DamageError(f"the file ends at byte {position} without its summary and end "
                              "marker (recording interrupted?)")
        if len(head) < 9:
            raise DamageError(f"a record is cut at byte {position}")
        opcode, length = struct.unpack("<BQ", head)
        if opcode in (MCAP_FOOTER, MCAP_DATA_END):
            return
        if length > MAX_RECORD_BYTES:
            raise DamageError(f"damaged record at byte {position} (length {length})")
        body = stream.read(length)
        if len(body) < length:
            raise DamageError(f"a record is cut at byte {position}")
        yield opcode, body, position


def _chunk_records(body: bytes, position: int) -> Iterator[Tuple[int, bytes, int]]:
    fields = _Fields(body)
    fields.take(16)  # message start and end times
    size, crc = fields.number("Q"), fields.number("I")
    compression = fields.string()
    data = fields.take(fields.number("Q"))
    if compression not in DECOMPRESSORS or size > MAX_RECORD_BYTES:
        raise DamageError(f"damaged chunk at byte {position} (compression {compression!r})")
    try:
        records = DECOMPRESSORS[compression](data)
    except ImportError:
        raise DamageError(f"chunk at byte {position}: no {compression} decompressor "
                          "installed") from None
    except Exception:  # each decompressor raises its own type for bad data
        raise DamageError(f"damaged chunk at byte {position} (cannot decompress)") from None
    if len(records) != size or (crc and zlib.crc32(records) != crc):
        raise DamageError(f"damaged chunk at byte {position} (checksum mismatch)")
    at = 0
    while at < len(records):
        if at + 9 > len(records):
            raise DamageError(f"damaged chunk at byte {position} (a record is cut)")
        opcode, length = struct.unpack_from("<BQ", records, at)
        at += 9
        if at + length > len(records):
            raise DamageError(f"damaged chunk at byte {position} (a record is cut)")
        yield opcode, records[at:at + length], position
        at += length


def _mcap_messages(path: Path) -> Iterator[Tuple[int, str, str, int, bytes]]:
    """Yield ``(channel id, message type, topic, log time ns, data)`` in file order.

    :raises DamageError: where the file stops making sense (after the
        messages before that point were yielded).
    :raises SalvageError: when the file does not start as an mcap file.
    """
    schemas: Dict[int, str] = {}
    channels: Dict[int, Tuple[str, str]] = {}
    with open(path, "rb") as stream:
        if stream.read(8) != MCAP_MAGIC:
            raise SalvageError(f"{path}: not an mcap file (no MCAP magic)")
        for opcode, body, position in _records(stream):
            inner = _chunk_records(body, position) if opcode == MCAP_CHUNK \
                else iter([(opcode, body, position)])
            for code, record, _ in inner:
                fields = _Fields(record)
                if code == MCAP_SCHEMA:
                    key = fields.number("H")
                    schemas[key] = fields.string()
                elif code == MCAP_CHANNEL:
                    key, schema = fields.number("H"), fields.number("H")
                    channels[key] = (schemas.get(schema, ""), fields.string())
                elif code == MCAP_MESSAGE:
                    key = fields.number("H")
                    fields.take(4)  # sequence
                    log_ns = fields.number("Q")
                    fields.take(8)  # publish time
                    if key in channels:
                        msgtype, topic = channels[key]
                        yield key, msgtype, topic, log_ns, fields.rest()


# --- sqlite3 ---------------------------------------------------------------------

def _connect(path: Path) -> sqlite3.Connection:
    """Open a sqlite3 file read-only, without locks, with a lenient schema parser."""
    connection = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro&immutable=1", uri=True)
    connection.execute("PRAGMA writable_schema=ON")
    return connection


def _sqlite_salvage(path: Path) -> SalvagedBag:
    bag = SalvagedBag(path, "sqlite3")
    try:
        connection = _connect(path)
    except sqlite3.Error as error:
        raise SalvageError(f"{path}: not a readable sqlite3 file ({error})") from None
    try:
        topics = {int(key): (str(name), str(msgtype)) for key, name, msgtype in
                  connection.execute("SELECT id, name, type FROM topics")}
        counts = {key: 0 for key in topics}
        try:
            for key, log_ns in connection.execute(
                    "SELECT topic_id, timestamp FROM messages ORDER BY id"):
                counts[key] = counts.get(key, 0) + 1
                bag.note_time(int(log_ns))
        except sqlite3.Error as error:
            bag.damage = f"damaged sqlite3 file after {sum(counts.values())} messages ({error})"
    except sqlite3.Error as error:
        raise SalvageError(f"{path}: no readable rosbag2 tables ({error})") from None
    finally:
        connection.close()
    bag.topics = {name: (msgtype, counts.get(key, 0)) for key, (name, msgtype) in topics.items()}
    return bag


def _sqlite_messages(path: Path, topic: str) -> Iterator[Tuple[int, bytes]]:
    connection = _connect(path)
    try:
        # One table scanned in row order: nothing is sorted, so every
        # message before the damage comes out before the error.
        keys = [key for (key,) in connection.execute(
            "SELECT id FROM topics WHERE name = ?", (topic,))]
        rows = connection.execute("SELECT timestamp, data FROM messages WHERE topic_id = ? "
                                  "ORDER BY id", (keys[0] if keys else -1,))
        try:
            for timestamp, data in rows:
                yield int(timestamp), bytes(data)
        except sqlite3.Error as error:
            raise DamageError(f"damaged sqlite3 file ({error})") from None
    finally:
        connection.close()


def expected_count(folder: Optional[Path], topic: str) -> Optional[int]:
    """Message count of a topic in a rosbag2 folder's metadata.yaml, if it has one.

    :param folder: the rosbag2 folder (None for a bare storage file).
    :param topic: the topic.
    :return: the count the recorder wrote down, or None.
    """
    if folder is None or not (folder / "metadata.yaml").is_file():
        return None
    import yaml

    try:
        info = yaml.safe_load((folder / "metadata.yaml").read_text())
        for entry in info["rosbag2_bagfile_information"]["topics_with_message_count"]:
            if entry["topic_metadata"]["name"] == topic:
                return int(entry["message_count"])
    except Exception:  # a damaged metadata.yaml only loses the expected count
        return None
    return None
