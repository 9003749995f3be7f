"""Order history import (Shopify's orders export): rows grouped into orders, upserted with their lines."""

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal

from django.db import transaction

from segments.ingest import formats, sql
from segments.ingest.formats import RowError
from segments.ingest.importer import (  # shared with the contact importer
    ImportOptions,
    ImportSummary,
)
from segments.ingest.services import Identity, announce_events, resolve_contacts
from segments.membership import segment_refresh_for_contacts
from segments.models import Event, EventType, Order, OrderLine, OrderStatus, Product
from segments.money import MoneyError, parse_amount
from segments.services import contact_stats_refresh

# --- orders ---------------------------------------------------------------------------------

@dataclass
class OrderDraft:
    line: int
    name: str
    cells: dict
    lines: list[dict] = field(default_factory=list)


FINANCIAL_TO_STATUS = {"paid": OrderStatus.PAID, "partially_refunded": OrderStatus.PAID,
                       "refunded": OrderStatus.REFUNDED, "voided": OrderStatus.CANCELLED}


class OrderImporter:
    """Shopify's orders export: one row per line item, the rows of one order share its Name."""

    SOURCE = "shopify"

    def __init__(self, options: ImportOptions, progress: Callable[[int, ImportSummary], None] | None = None):
        self.opts = options
        self.progress = progress
        self.summary = ImportSummary(dry_run=options.dry_run, layout="shopify_orders")

    def run(self, header: list[str], rows: Iterator[tuple[int, dict]]) -> ImportSummary:
        formats.check_orders_layout(header)
        touched: set[int] = set()
        batch: list[OrderDraft] = []
        for draft in self._group(rows):
            batch.append(draft)
            if len(batch) >= max(1, self.opts.chunk_rows // 4):
                touched |= self._write(batch)
                batch = []
        if batch:
            touched |= self._write(batch)
        if touched and not self.opts.dry_run:
            contact_stats_refresh(contact_ids=touched)
            segment_refresh_for_contacts(contact_ids=touched, changed={"orders"})
        self.summary.contact_ids = touched
        return self.summary

    def _group(self, rows: Iterator[tuple[int, dict]]) -> Iterator[OrderDraft]:
        current: OrderDraft | None = None
        for line, raw in rows:
            self.summary.rows += 1
            name = formats.cell(raw.get("name"))
            if not name:
                self.summary.error(line, "no order Name")
                continue
            if current is None or current.name != name:
                if current is not None:
                    yield current
                current = OrderDraft(line=line, name=name, cells=dict(raw))
            else:  # order-level cells are only on the order's first row, but fill gaps anyway
                for k, v in raw.items():
                    if v and not current.cells.get(k):
                        current.cells[k] = v
            if formats.cell(raw.get("lineitem name")):
                current.lines.append({**raw, "_line": line})
            if self.progress and self.summary.rows % 1000 == 0:
                self.progress(self.summary.rows, self.summary)
        if current is not None:
            yield current

    def _parse(self, d: OrderDraft) -> tuple[Order, list[OrderLine], Identity]:
        c = d.cells
        get = lambda k: formats.cell(c.get(k.lower()))  # noqa: E731
        currency = (get("Currency") or "USD").upper()
        placed_at = formats.parse_time(get("Created at"))
        if placed_at is None:
            raise RowError("no Created at")
        country = formats.clean_country(get("Billing Country") or get("Shipping Country"))
        email, phone = None, None
        try:
            email = formats.clean_email(get("Email"))
        except RowError:
            pass
        for column in ("Phone", "Billing Phone", "Shipping Phone"):
            try:
                phone = formats.clean_phone(get(column), country)
            except RowError:
                phone = None
            if phone:
                break
        money = {}
        for col, key in (("Subtotal", "subtotal"), ("Shipping", "shipping"), ("Taxes", "tax"), ("Total", "total"),
                         ("Discount Amount", "discount_amount"), ("Refunded Amount", "refunded_amount")):
            try:
                money[key] = parse_amount(get(col) or "0", currency)
            except MoneyError as exc:
                raise RowError(f"{col}: {exc}") from None
        status = OrderStatus.PLACED
        if get("Cancelled at"):
            status = OrderStatus.CANCELLED
        elif get("Financial Status").lower() in FINANCIAL_TO_STATUS:
            status = FINANCIAL_TO_STATUS[get("Financial Status").lower()]
        if status == OrderStatus.PAID and get("Fulfillment Status").lower() == "fulfilled":
            status = OrderStatus.FULFILLED
        order = Order(source=self.SOURCE, external_id=(get("Id") or d.name)[:64], name=d.name[:64],
                      placed_at=placed_at, status=status, currency=currency,
                      discount_code=get("Discount Code")[:64], **money)
        lines = []
        for li in d.lines:
            lg = lambda k, li=li: formats.cell(li.get(k.lower()))  # noqa: E731
            try:
                qty = int(Decimal(lg("Lineitem quantity") or "1"))
                price = parse_amount(lg("Lineitem price") or "0", currency)
            except (ArithmeticError, ValueError) as exc:
                raise RowError(f"line {li['_line']}: bad quantity or price ({exc})") from None
            lines.append(OrderLine(sku=lg("Lineitem sku")[:64], title=lg("Lineitem name")[:255], quantity=qty,
                                   unit_price=price, total=price * qty))
        billing = get("Billing Name").split(" ", 1)
        ident = Identity(email=email, phone=str(phone) if phone else None,
                         first_name=billing[0] if billing else "", last_name=billing[1] if len(billing) > 1 else "")
        return order, lines, ident

    def _count(self, d: OrderDraft, kind: str) -> None:
        setattr(self.summary, {"new": "created", "update": "updated", "skip": "skipped"}[kind],
                getattr(self.summary, {"new": "created", "update": "updated", "skip": "skipped"}[kind]) + 1)
        if self.opts.collect_outcomes:
            self.summary.outcomes.append((d.line, kind, d.name, f"{len(d.lines)} line(s)"))

    def _write(self, drafts: list[OrderDraft]) -> set[int]:
        parsed = []
        for d in drafts:
            try:
                parsed.append((d, *self._parse(d)))
            except RowError as exc:
                self.summary.error(d.line, f"order {d.name}: {exc}")
        existing = {o.external_id: o for o in Order.objects.filter(
            source=self.SOURCE, external_id__in=[o.external_id for _d, o, _l, _i in parsed]).prefetch_related("lines")}
        if self.opts.dry_run:
            for d, order, lines, _i in parsed:
                old = existing.get(order.external_id)
                self._count(d, "new" if old is None else "update" if _order_changed(old, order, lines) else "skip")
            return set()
        touched: set[int] = set()
        with transaction.atomic():
            resolved = resolve_contacts([i for _d, _o, _l, i in parsed], source="shopify").contact_ids
            products = dict(Product.objects.filter(sku__in={li.sku for *_x, ls, _i in parsed for li in ls if li.sku})
                            .values_list("sku", "id"))
            events = []
            for (d, order, lines, _i), contact_id in zip(parsed, resolved, strict=True):
                order.contact_id = contact_id
                for li in lines:
                    li.product_id = products.get(li.sku)
                old = existing.get(order.external_id)
                if old is None:
                    order.save(force_insert=True)
                    self._count(d, "new")
                    events.append(_placed_event(order, lines))
                elif _order_changed(old, order, lines):
                    order.pk, order.created_at = old.pk, old.created_at
                    order.save(force_update=True)
                    old.lines.all().delete()
                    self._count(d, "update")
                    if old.contact_id:
                        touched.add(old.contact_id)  # the previous owner's figures too
                else:
                    self._count(d, "skip")
                    continue
                for li in lines:
                    li.order_id = order.pk
                OrderLine.objects.bulk_create(lines)
                if contact_id:
                    touched.add(contact_id)
            ids = sql.insert_events(events)  # an order_placed already stored (say, by the webhook) is skipped
            self.summary.event_ids += ids
            announce_events(ids, trigger_flows=self.opts.trigger_flows)
        if self.progress:
            self.progress(self.summary.rows, self.summary)
        return touched


def _order_changed(old: Order, new: Order, lines: list[OrderLine]) -> bool:
    fields = ("name", "placed_at", "status", "currency", "subtotal", "shipping", "tax", "total",
              "discount_code", "discount_amount", "refunded_amount")
    if any(getattr(old, f) != getattr(new, f) for f in fields):
        return True
    before = sorted((li.sku, li.title, li.quantity, li.unit_price) for li in old.lines.all())
    after = sorted((li.sku, li.title, li.quantity, li.unit_price) for li in lines)
    return before != after


def _placed_event(order: Order, lines: list[OrderLine]) -> Event:
    """The same key as the orders/create webhook's event, so history and live never double."""
    return Event(contact_id=order.contact_id, type=EventType.ORDER_PLACED, occurred_at=order.placed_at,
                 source="shopify", idempotency_key=f"order:{order.external_id}:placed",
                 properties={"order_id": order.external_id, "name": order.name, "total": str(order.total),
                             "currency": order.currency,
                             "items": [{"sku": li.sku, "title": li.title, "quantity": li.quantity,
                                        "price": str(li.unit_price)} for li in lines]})
