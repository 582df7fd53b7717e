#!/usr/bin/env python3
"""Builds the Enhanced RTMP (E-RTMP v1) FLV fixtures from ffmpeg-encoded MP4 files.

Debian 12's ffmpeg 5.1 cannot write HEVC/AV1/VP9 into FLV, so this script takes the
codec configuration box (hvcC / av1C / vpcC) and the samples (already in the ISO BMFF
payload convention: length-prefixed NAL units, low-overhead OBUs, VP9 frames) out of an
MP4 that ffmpeg made, and writes them as ExVideoTagHeader tags, the way ffmpeg >= 6.1's
flv muxer does: SequenceStart, CodedFrames (HEVC with a non-zero composition offset) or
CodedFramesX (HEVC, offset 0), CodedFrames (AV1, VP9: no offset field), SequenceEnd.

Run from this directory: python3 make-enhanced.py
"""
import csv, io, struct, subprocess, tempfile, os

FIXTURES = [
    # (output, fourcc, config box, ffmpeg video args)
    ("hevc.flv", b"hvc1", b"hvcC",
     ["-c:v", "libx265", "-g", "10", "-x265-params", "log-level=error", "-tag:v", "hvc1"]),
    ("av1.flv", b"av01", b"av1C", ["-c:v", "libaom-av1", "-g", "10", "-cpu-used", "8", "-b:v", "100k"]),
    ("vp9.flv", b"vp09", b"vpcC", ["-c:v", "libvpx-vp9", "-g", "10", "-deadline", "realtime", "-b:v", "100k"]),
]


def box_payload(data, name):
    # Fixture generation only: the first occurrence of the box type inside the file.
    at = data.index(name)
    size = struct.unpack(">I", data[at - 4:at])[0]
    body = data[at + 4:at - 4 + size]
    # vpcC is a FullBox: E-RTMP carries the VPCodecConfigurationRecord with the version
    # and flags in front, as ffmpeg's ff_isom_write_vpcc writes it. hvcC/av1C are plain.
    return body


def tag(kind, ts, body):
    head = struct.pack(">B", kind) + len(body).to_bytes(3, "big")
    head += (ts & 0xFFFFFF).to_bytes(3, "big") + bytes([(ts >> 24) & 0xFF]) + b"\0\0\0"
    return head + body + struct.pack(">I", 11 + len(body))


def build(out, fourcc, cfg_box, vargs):
    with tempfile.TemporaryDirectory() as tmp:
        mp4 = os.path.join(tmp, "v.mp4")
        subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi",
                        "-i", "testsrc=size=160x120:rate=10", "-t", "1", *vargs, mp4], check=True)
        data = open(mp4, "rb").read()
        probe = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v", "-show_packets",
                                "-show_entries", "packet=pts_time,dts_time,size,pos,flags",
                                "-of", "csv=p=0:nk=1", mp4], check=True, capture_output=True, text=True)
    rows = list(csv.reader(io.StringIO(probe.stdout)))
    # csv order follows ffprobe's field order: pts_time, dts_time, size, pos, flags
    packets = [(round(float(p) * 1000), round(float(d) * 1000), int(s), int(o), f)
               for p, d, s, o, f in rows]
    base = packets[0][1]
    flv = b"FLV\x01\x01" + struct.pack(">I", 9) + struct.pack(">I", 0)
    flv += tag(9, 0, bytes([0x80 | 0x10 | 0]) + fourcc + box_payload(data, cfg_box))
    last = 0
    for pts, dts, size, pos, flags in packets:
        frame = data[pos:pos + size]
        frame_type = 0x10 if "K" in flags else 0x20
        cts = pts - dts
        if fourcc == b"hvc1" and cts != 0:
            body = bytes([0x80 | frame_type | 1]) + fourcc + (cts & 0xFFFFFF).to_bytes(3, "big") + frame
        elif fourcc == b"hvc1":
            body = bytes([0x80 | frame_type | 3]) + fourcc + frame
        else:
            body = bytes([0x80 | frame_type | 1]) + fourcc + frame
        last = dts - base
        flv += tag(9, last, body)
    flv += tag(9, last, bytes([0x80 | 0x10 | 2]) + fourcc)
    open(out, "wb").write(flv)
    print(out, len(flv), "bytes,", len(packets), "frames")


for fixture in FIXTURES:
    build(*fixture)
