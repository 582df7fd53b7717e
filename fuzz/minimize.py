#!/usr/bin/env python3
"""Adds the best of a depth run's working corpus to a committed corpus dir.

    fuzz/minimize.py TARGET MAX_LEN COMMITTED_DIR [SEED_DIR...]

Runs the target built by fuzz/depth.sh with libFuzzer -merge=1 -set_cover_merge=1
over COMMITTED_DIR, the SEED_DIRs and the working corpus ($FUZZ_WORK/TARGET, default
/tmp/shardcast-fuzz/TARGET), only to learn every input's features. Then, starting
from the features of the committed and seed files, it adds working-corpus inputs
greedily, most new features per byte first, until nothing adds a feature or
COMMITTED_DIR holds 300 files or CAP_BYTES bytes (default 2,000,000), so that
`cargo test` stays fast. Added files get libFuzzer's names (SHA-1 of the content),
which the seed tests treat as grown inputs: replayed, not checked as seeds.
"""
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile

target, max_len, committed = sys.argv[1], sys.argv[2], sys.argv[3]
seed_dirs = sys.argv[4:]
root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
binary = f'{root}/fuzz/target/x86_64-unknown-linux-gnu/release/{target}'
work = os.path.join(os.environ.get('FUZZ_WORK', '/tmp/shardcast-fuzz'), target)
cap_files, cap_bytes = 300, int(os.environ.get('CAP_BYTES', 2_000_000))
committed = os.path.abspath(committed)
os.makedirs(committed, exist_ok=True)

tmp = tempfile.mkdtemp(prefix=f'minimize-{target}-')
out, control = os.path.join(tmp, 'out'), os.path.join(tmp, 'control')
os.mkdir(out)
run = subprocess.run(
    ['nice', '-n', '19', binary, '-merge=1', '-set_cover_merge=1',
     f'-merge_control_file={control}', f'-max_len={max_len}', '-rss_limit_mb=2048',
     '-timeout=10', f'-artifact_prefix={tmp}/', out, committed,
     *[os.path.abspath(d) for d in seed_dirs], work],
    capture_output=True, text=True)
if run.returncode != 0:
    sys.exit(run.stderr[-3000:])

# The control file: file count, count in the first dir, the paths, then per input
# "STARTED i size", and with -set_cover_merge all its features as "FT i f...".
lines = open(control).read().split('\n')
n = int(lines[0])
files = lines[2:2 + n]
features, sizes = {}, {}
for line in lines[2 + n:]:
    p = line.split()
    if p and p[0] == 'STARTED':
        sizes[int(p[1])] = int(p[2])
    elif p and p[0] == 'FT':
        features[int(p[1])] = set(map(int, p[2:]))

have, candidates = set(), []
kept_files = kept_bytes = 0
for i, path in enumerate(files):
    if path.startswith(work + '/'):
        candidates.append(i)
        continue
    have |= features.get(i, set())
    if path.startswith(committed + '/'):
        kept_files += 1
        kept_bytes += os.path.getsize(path)
base = len(have)
everything = set().union(*features.values()) if features else set()
work_files = len(candidates)
added = []
candidates = [i for i in candidates if features.get(i, set()) - have]
while candidates and kept_files + len(added) < cap_files:
    best = max(candidates, key=lambda i: (len(features[i] - have) / (sizes.get(i, 0) + 64),
                                          -sizes.get(i, 0)))
    size = os.path.getsize(files[best])
    candidates.remove(best)
    if kept_bytes + size > cap_bytes:
        continue
    added.append(best)
    have |= features[best]
    kept_bytes += size
    candidates = [i for i in candidates if features[i] - have]
for i in added:
    data = open(files[i], 'rb').read()
    shutil.copy(files[i], os.path.join(committed, hashlib.sha1(data).hexdigest()))
shutil.rmtree(tmp)
print(f'{target}: features {base} from seeds, {len(everything)} in all, {len(have)} kept '
      f'({100 * len(have) / max(1, len(everything)):.1f}%); added {len(added)} of '
      f'{work_files} working-corpus files; {committed}: {kept_files + len(added)} files, '
      f'{kept_bytes} bytes')
