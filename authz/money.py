"""Integer money and volume arithmetic shared by the rules.

Money is kopecks, volume millilitres, prices kopecks per litre (per 1000 ml). Amount of a
volume is ``volume_ml * price / 1000`` rounded half up to the kopeck.
"""

#: Largest amount any request may carry: 10 billion rubles in kopecks. Bounds keep every
#: product of two request values inside a signed 64-bit integer for the native evaluator.
MAX_AMOUNT_KOP = 10**12
#: Largest volume any request may carry: 1,000,000 litres.
MAX_VOLUME_ML = 10**9
#: Largest price: 1,000,000 rubles per litre (or per unit).
MAX_PRICE_KOP_PER_L = 10**8
#: Percentages are in basis points: 10000 = 100 %.
BP_WHOLE = 10_000


def amount_for_volume(volume_ml: int, price_kop_per_l: int) -> int:
    """The amount in kopecks of ``volume_ml`` at ``price_kop_per_l``, rounded half up."""
    return (volume_ml * price_kop_per_l + 500) // 1000


def max_volume_for_amount(amount_kop: int, price_kop_per_l: int) -> int:
    """The largest volume whose rounded amount does not exceed ``amount_kop``.

    ``amount_for_volume(v) <= A`` holds exactly when ``v * p + 500 < 1000 * (A + 1)``,
    that is ``v <= (1000 * A + 499) // p``. A free product (price 0) is not bounded by
    money: the answer is :data:`MAX_VOLUME_ML`.
    """
    if amount_kop < 0:
        return 0
    if price_kop_per_l == 0:
        return MAX_VOLUME_ML
    return min((1000 * amount_kop + 499) // price_kop_per_l, MAX_VOLUME_ML)


def bp_of(amount: int, bp: int) -> int:
    """``amount * bp / 10000`` rounded half up (a percentage of a non-negative amount)."""
    return (amount * bp + BP_WHOLE // 2) // BP_WHOLE
