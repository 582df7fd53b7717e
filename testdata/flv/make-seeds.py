#!/usr/bin/env python3
"""Writes the flv_tag fuzz seeds: one file per tag body, first byte = kind selector
(0 audio, 1 video, 2 script, as in proto/src/flv/fuzzing.rs). Real bodies come from the
fixture files (truncated to keep seeds small); the rest cover E-RTMP features no fixture
has (ModEx, multitrack, metadata, enhanced audio). Run from this directory."""
import os, struct

OUT = "corpus/flv_tag"
os.makedirs(OUT, exist_ok=True)
KIND = {8: 0, 9: 1, 18: 2}

def tags(path):
    data = open(path, "rb").read()
    pos = 13
    while pos + 11 <= len(data):
        t = data[pos] & 0x1F
        size = int.from_bytes(data[pos + 1:pos + 4], "big")
        yield t, data[pos + 11:pos + 11 + size]
        pos += 11 + size + 4

def put(name, kind, body):
    open(os.path.join(OUT, name), "wb").write(bytes([kind]) + body)

seen = set()
for f in ["h264-aac.flv", "h264-mp3.flv", "hevc.flv", "av1.flv", "vp9.flv"]:
    for t, body in tags(f):
        # one seed per distinct header shape
        key = (f, t, body[:2] if t != 18 else b"")
        if key in seen:
            continue
        seen.add(key)
        put(f"{f[:-4]}-{len(seen)}", KIND[t], body[:300])

put("ex-modex", 1, b"\x97\x02\x00\x01\x02\x03hvc1\xaa")
put("ex-multitrack-one", 1, b"\x96\x03hvc1\x00\xaa\xbb")
put("ex-multitrack-many", 1, b"\x96\x13hvc1\x01\x00\x00\x02\x11\x22\x00\x00\x00\x01\x33")
put("ex-multitrack-many-codecs", 1, b"\x96\x20vp09\x01\x00\x00\x01\x44av01\x00\x00\x00\x01\x55")
put("ex-metadata", 1, b"\xd4hvc1\x02\x00\x09colorInfo\x03\x00\x00\x09")
put("ex-avc1-coded", 1, b"\x91avc1\x00\x00\x10\x00\x00\x00\x01\x65")
put("ex-audio-aac-config", 0, b"\x90mp4a\x12\x10")
put("ex-audio-aac-multitrack", 0, b"\x95\x01mp4a\x00\x21")
put("ex-audio-aac-end", 0, b"\x92mp4a")
put("legacy-hevc-12", 1, b"\x1c\x01\x00\x00\x21\xaa")
put("legacy-vp6", 1, b"\x14\x00\x01\x02")
put("set-data-frame", 2, b"\x02\x00\x0d@setDataFrame\x02\x00\x0aonMetaData\x08\x00\x00\x00\x00\x00\x00\x09")
print(len(os.listdir(OUT)), "seeds")
