"""Money is a Decimal plus an ISO 4217 currency; never a float.

Amounts are stored with two decimal places whatever the currency; the currency decides how
many of them may be non-zero (JPY has no minor unit, MYR and USD two) and how it is shown.
"""

from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

# ISO 4217 minor units for currencies a shop is likely to use; others default to 2.
MINOR_UNITS = {
    "JPY": 0, "KRW": 0, "VND": 0, "CLP": 0, "ISK": 0, "TWD": 2, "HUF": 2,
    "USD": 2, "MYR": 2, "EUR": 2, "GBP": 2, "SGD": 2, "AUD": 2, "CAD": 2, "THB": 2,
    "IDR": 2, "PHP": 2, "CNY": 2, "HKD": 2, "INR": 2, "NZD": 2, "CHF": 2,
    "BHD": 3, "KWD": 3, "OMR": 3,
}
SYMBOLS = {"JPY": "¥", "USD": "$", "MYR": "RM", "EUR": "€", "GBP": "£", "SGD": "S$"}
CURRENCY_CHOICES = [(c, c) for c in sorted(MINOR_UNITS)]
AMOUNT_MAX_DIGITS = 14
AMOUNT_DECIMAL_PLACES = 2  # the storage scale; BHD/KWD are rounded to it


class MoneyError(ValueError):
    pass


def minor_units(currency: str) -> int:
    return min(MINOR_UNITS.get((currency or "").upper(), 2), AMOUNT_DECIMAL_PLACES)


def parse_amount(value, currency: str) -> Decimal:
    """Turn '1,234.50', 1234.5 or Decimal into a Decimal valid for the currency.

    Raises MoneyError naming the value when it is not a number or has more precision
    than the currency allows (e.g. JPY 100.5).
    """
    if isinstance(value, float):
        value = repr(value)
    text = str(value).strip().replace(",", "") if value is not None else ""
    try:
        amount = Decimal(text)
    except InvalidOperation:
        raise MoneyError(f"{value!r} is not an amount") from None
    if not amount.is_finite():
        raise MoneyError(f"{value!r} is not an amount")
    places = minor_units(currency)
    quantized = amount.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP)
    if quantized != amount:
        raise MoneyError(f"{value!r} has more decimals than {currency} allows ({places})")
    return quantized


def quantize(amount: Decimal, currency: str) -> Decimal:
    places = minor_units(currency)
    return Decimal(amount).quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP)


def format_money(amount, currency: str) -> str:
    if amount is None:
        return "—"
    value = quantize(Decimal(amount), currency)
    places = minor_units(currency)
    text = f"{value:,.{places}f}"
    symbol = SYMBOLS.get(currency)
    return f"{symbol}{text}" if symbol else f"{text} {currency}"
