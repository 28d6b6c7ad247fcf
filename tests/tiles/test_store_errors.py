from __future__ import annotations

import json

import numpy as np
import pytest

from sitewatch.errors import InputError
from tiles.store import read_pair_npz


@pytest.mark.parametrize("meta", [{"meta": {}}, {"site": {}, "meta": {}}, "not json"])
def test_damaged_pair_file_names_the_file(tmp_path, meta):
    path = tmp_path / "broken.npz"
    text = meta if isinstance(meta, str) else json.dumps(meta)
    np.savez(path, image=np.zeros((2, 3, 4, 4), np.float16), valid=np.ones((2, 4, 4), bool), meta=np.array(text))
    with pytest.raises(InputError, match="broken.npz"):
        read_pair_npz(path)
