"""Parquet copies of the JSON data fixtures, written by pyarrow as Hugging
Face datasets writes its files (nested lists of structs for conversations):

    pip install pyarrow
    python3 scripts/parquet-fixtures.py            # tests/fixtures/data/*.parquet
    python3 scripts/parquet-fixtures.py --big F N  # F: N GiB of messages rows

The big file is for checking that reading streams (flat memory); it is not
committed.
"""
import json
import sys

import pyarrow as pa
import pyarrow.parquet as pq

DIR = "tests/fixtures/data"


def rows(name):
    with open(f"{DIR}/{name}") as f:
        if name.endswith(".jsonl"):
            return [json.loads(l) for l in f if l.strip()]
        return json.load(f)


def write(name, records, schema):
    table = pa.Table.from_pylist(records, schema=schema)
    pq.write_table(table, f"{DIR}/{name}", row_group_size=2)


turn = lambda a, b: pa.struct([(a, pa.string()), (b, pa.string())])
MESSAGES = pa.schema([("messages", pa.list_(turn("role", "content")))])

if len(sys.argv) == 4 and sys.argv[1] == "--big":
    path, gib = sys.argv[2], float(sys.argv[3])
    base = rows("messages.jsonl")
    pad = "x" * 2000
    batch = []
    for i in range(4096):
        r = json.loads(json.dumps(base[i % len(base)]))
        r["messages"][-1]["content"] += f" ({i}) {pad}"
        batch.append(r)
    table = pa.Table.from_pylist(batch, schema=MESSAGES)
    with pq.ParquetWriter(path, MESSAGES, compression="none") as w:
        written = 0
        while written < gib * 2**30:
            w.write_table(table, row_group_size=4096)
            written += table.nbytes
    sys.exit(0)

write(
    "alpaca.parquet",
    rows("alpaca.json"),
    pa.schema(
        [
            ("instruction", pa.string()),
            ("input", pa.string()),
            ("output", pa.string()),
            ("system", pa.string()),
            ("history", pa.list_(pa.list_(pa.string()))),
        ]
    ),
)
write(
    "sharegpt.parquet",
    rows("sharegpt.json"),
    pa.schema([("conversations", pa.list_(turn("from", "value"))), ("system", pa.string())]),
)
write("messages.parquet", rows("messages.jsonl"), MESSAGES)
write("text.parquet", rows("text.jsonl"), pa.schema([("text", pa.string())]))
