"""The fingerprint table of fingerprint mode (vpmu.check.fpset) behaves as a set of ints."""

from __future__ import annotations

import io
import random

from vpmu.check.fpset import FingerprintSet


def test_behaves_as_a_set_across_growth_and_a_checkpoint_round_trip() -> None:
    rng = random.Random(15)
    keys = [rng.randrange(-(2**63) + 1, 2**63) for _ in range(5000)] + [0, 1, -1, 2**63 - 1, 1024, 2048]
    fs, ref = FingerprintSet(16), set()
    for k in keys + keys[:100]:  # duplicates change nothing
        assert (k in fs) == (k in ref)
        fs.add(k)
        ref.add(k)
        assert k in fs
    assert len(fs) == len(ref) and set(fs) == ref
    assert all(k + 1 not in fs for k in keys[:500] if k + 1 not in ref)
    assert fs.nbytes <= 8 * 2 * len(ref) * 4 // 3 + 8 * 16  # load stays above 3/8
    f = io.BytesIO()
    fs.write(f)
    f.seek(0)
    back = FingerprintSet.read(f, fs.header())
    assert set(back) == ref and len(back) == len(ref) and all(k in back for k in keys)


def test_zero_is_kept_apart_from_empty_slots() -> None:
    fs = FingerprintSet()
    assert 0 not in fs and len(fs) == 0
    fs.add(0)
    assert 0 in fs and len(fs) == 1 and list(fs) == [0]
