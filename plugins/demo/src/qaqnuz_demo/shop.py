"""A demo shop database: contacts, orders and order items with plausible, deterministic data.

    python -m qaqnuz_demo.shop shop.db            # create (refuses to overwrite)
    python -m qaqnuz_demo.shop shop.db --force    # replace an existing file

The same seed always gives the same rows. `SCHEMA` is portable SQL (SQLite and PostgreSQL), and `rows(seed)`
gives the data as plain tuples, so a test can load the identical shop into PostgreSQL.
"""

from __future__ import annotations

import argparse
import datetime as dt
import random
import sqlite3
import sys
from decimal import Decimal
from pathlib import Path

CONTACTS = 120
ORDERS = 300
FIRST_ORDER = 1001
STATUSES = ("pending", "paid", "shipped", "delivered", "cancelled", "refunded")
STATUS_WEIGHTS = (10, 15, 20, 45, 6, 4)

SCHEMA = """\
CREATE TABLE contacts (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    email TEXT NOT NULL UNIQUE,
    company TEXT NOT NULL,
    phone TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE TABLE orders (
    id TEXT PRIMARY KEY,
    contact_id INTEGER NOT NULL REFERENCES contacts (id),
    status TEXT NOT NULL CHECK (status IN ('pending', 'paid', 'shipped', 'delivered', 'cancelled', 'refunded')),
    total NUMERIC(12, 2) NOT NULL CHECK (total >= 0),
    currency TEXT NOT NULL DEFAULT 'EUR',
    reference TEXT,
    created_at TEXT NOT NULL
);
CREATE TABLE order_items (
    id INTEGER PRIMARY KEY,
    order_id TEXT NOT NULL REFERENCES orders (id),
    sku TEXT NOT NULL,
    product TEXT NOT NULL,
    quantity INTEGER NOT NULL CHECK (quantity > 0),
    unit_price NUMERIC(12, 2) NOT NULL CHECK (unit_price >= 0)
);
CREATE INDEX orders_contact ON orders (contact_id);
CREATE INDEX order_items_order ON order_items (order_id);
"""

_FIRST = (
    "Ada Alan Amara Ben Chloe Dara Elif Emil Farah Finn Grace Hugo Ines Ivan Jonas Keiko Lea Liam Maya Mateo "
    "Nadia Noah Olga Omar Priya Rafael Sara Tariq Ulla Vera Wei Yara Zoe"
).split()
_LAST = (
    "Andersen Baker Costa Dubois Eriksen Fischer Garcia Haddad Ivanova Jansen Kowalski Lindqvist Moreau Novak "
    "Okafor Petrov Quinn Rossi Silva Tanaka Umarov Varga Weber Yilmaz Zhang"
).split()
_COMPANIES = (
    "Acme Corp",
    "Blue Harbor Foods",
    "Copperleaf Studio",
    "Delta Freight",
    "Evergreen Dental",
    "Fjord Analytics",
    "Granite Works",
    "Helix Bio",
    "Indigo Travel",
    "Juniper Legal",
    "Kestrel Robotics",
    "Lumen Energy",
    "Maple & Co",
    "Northwind Traders",
    "Orbit Media",
)
_PRODUCTS = (
    ("SKU-1001", "Espresso beans 1 kg", Decimal("24.90")),
    ("SKU-1002", "Ceramic pour-over", Decimal("32.00")),
    ("SKU-1003", "Paper filters (100)", Decimal("6.50")),
    ("SKU-1004", "Burr grinder", Decimal("129.00")),
    ("SKU-1005", "Milk frother", Decimal("45.00")),
    ("SKU-1006", "Travel mug", Decimal("19.95")),
    ("SKU-1007", "Gooseneck kettle", Decimal("79.00")),
    ("SKU-1008", "Cold brew kit", Decimal("38.50")),
    ("SKU-1009", "Tasting cups (6)", Decimal("27.00")),
    ("SKU-1010", "Barista apron", Decimal("34.00")),
)
_EPOCH = dt.datetime(2025, 1, 6, 8, 0, tzinfo=dt.UTC)


def _stamp(moment: dt.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def rows(seed: int = 7) -> dict[str, list[tuple[object, ...]]]:
    """The shop's rows per table (contacts, orders, order_items), the same for the same seed."""
    rng = random.Random(seed)
    contacts: list[tuple[object, ...]] = []
    used: set[str] = set()
    for cid in range(1, CONTACTS + 1):
        first, last = rng.choice(_FIRST), rng.choice(_LAST)
        company = rng.choice(_COMPANIES)
        domain = company.lower().replace(" & ", "-").replace(" ", "") + ".example"
        local = f"{first}.{last}".lower()
        email = f"{local}@{domain}"
        if email in used:
            email = f"{local}{cid}@{domain}"
        used.add(email)
        phone = f"+1-555-{rng.randrange(100, 1000):03d}-{rng.randrange(0, 10000):04d}"
        created = _EPOCH - dt.timedelta(days=rng.randrange(30, 900))
        contacts.append((cid, f"{first} {last}", email, company, phone, _stamp(created)))
    orders: list[tuple[object, ...]] = []
    items: list[tuple[object, ...]] = []
    item_id = 1
    for number in range(FIRST_ORDER, FIRST_ORDER + ORDERS):
        order_id = f"ord_{number}"
        contact_id = rng.randrange(1, CONTACTS + 1)
        status = rng.choices(STATUSES, weights=STATUS_WEIGHTS)[0]
        created = _EPOCH + dt.timedelta(hours=(number - FIRST_ORDER) * 7 + rng.randrange(0, 7))
        total = Decimal("0.00")
        for sku, product, price in rng.sample(_PRODUCTS, rng.randrange(1, 5)):
            quantity = rng.choices((1, 2, 3, 4), weights=(60, 25, 10, 5))[0]
            items.append((item_id, order_id, sku, product, quantity, str(price)))
            total += price * quantity
            item_id += 1
        reference = f"PO-{rng.randrange(10000, 100000)}" if rng.random() < 0.3 else None
        orders.append((order_id, contact_id, status, str(total), "EUR", reference, _stamp(created)))
    return {"contacts": contacts, "orders": orders, "order_items": items}


INSERTS = {
    "contacts": "INSERT INTO contacts (id, name, email, company, phone, created_at) VALUES (?, ?, ?, ?, ?, ?)",
    "orders": (
        "INSERT INTO orders (id, contact_id, status, total, currency, reference, created_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)"
    ),
    "order_items": (
        "INSERT INTO order_items (id, order_id, sku, product, quantity, unit_price) VALUES (?, ?, ?, ?, ?, ?)"
    ),
}


def create(path: Path, *, seed: int = 7) -> None:
    """Write the demo shop to a new SQLite file at `path` (WAL mode). Refuses an existing file."""
    path = Path(path)
    if path.exists():
        raise FileExistsError(f"{path} already exists")
    path.parent.mkdir(parents=True, exist_ok=True)
    data = rows(seed)
    conn = sqlite3.connect(path)
    try:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.executescript(SCHEMA)
        with conn:
            for table in ("contacts", "orders", "order_items"):
                conn.executemany(INSERTS[table], data[table])
    finally:
        conn.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m qaqnuz_demo.shop",
        description=(
            f"Create the qaqnuz demo shop: a SQLite database with {CONTACTS} contacts, {ORDERS} orders "
            f"(ord_{FIRST_ORDER} onwards) and their order items. The same seed gives the same data."
        ),
    )
    parser.add_argument("out", type=Path, help="the SQLite file to create, e.g. shop.db")
    parser.add_argument("--seed", type=int, default=7, help="random seed for the generated data (default: 7)")
    parser.add_argument("--force", action="store_true", help="replace OUT if it already exists")
    args = parser.parse_args(argv)
    if args.out.exists():
        if not args.force:
            print(f"error: {args.out} already exists; pass --force to replace it", file=sys.stderr)
            return 2
        for suffix in ("", "-wal", "-shm", "-journal"):
            Path(f"{args.out}{suffix}").unlink(missing_ok=True)
    create(args.out, seed=args.seed)
    counts = {table: len(values) for table, values in rows(args.seed).items()}
    print(
        f"created {args.out}: {counts['contacts']} contacts, {counts['orders']} orders, "
        f"{counts['order_items']} order items",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
