"""The result and speed files, checked field by field (type and range) before any table is written from them: a
file that fails gets one line naming it and the field, never a traceback or a NaN / 2.0 AUROC in the tables."""
import math

TYPES = ("blowhole", "break", "crack", "fray", "uneven")


class Invalid(ValueError):
    """A field that is missing, of the wrong type or out of range: str(e) names it."""


def _number(value, where):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise Invalid("%s must be a number, not %s" % (where, type(value).__name__))
    if not math.isfinite(value):
        raise Invalid("%s must be finite, not %r" % (where, value))
    return value


def fraction(value, where):
    """An AUROC, AUPRO and the like: a finite number in [0, 1]."""
    if not 0.0 <= _number(value, where) <= 1.0:
        raise Invalid("%s must be in [0, 1], not %r" % (where, value))


def positive(value, where):
    if not _number(value, where) > 0:
        raise Invalid("%s must be > 0, not %r" % (where, value))


def non_negative(value, where):
    if not _number(value, where) >= 0:
        raise Invalid("%s must be >= 0, not %r" % (where, value))


def whole(minimum):
    def check(value, where):
        if isinstance(value, bool) or not isinstance(value, int):
            raise Invalid("%s must be a whole number, not %r" % (where, value))
        if value < minimum:
            raise Invalid("%s must be >= %d, not %r" % (where, minimum, value))
    return check


def text(value, where):
    if not isinstance(value, str) or not value:
        raise Invalid("%s must be a non-empty string, not %r" % (where, value))


def obj(fields, optional=()):
    """A JSON object with the `fields` (name -> check) and, when present, the `optional` ones (a tuple of pairs);
    other fields are allowed (result files carry more than the tables read)."""
    def check(value, where):
        if not isinstance(value, dict):
            raise Invalid("%s must be an object, not %s" % (where, type(value).__name__))
        for name, field_check in fields.items():
            if name not in value:
                raise Invalid("%s has no field '%s'" % (where, name))
            field_check(value[name], "%s.%s" % (where, name))
        for name, field_check in optional:
            if name in value:
                field_check(value[name], "%s.%s" % (where, name))
    return check


def array(item, min_length=0, max_length=None):
    def check(value, where):
        if not isinstance(value, list):
            raise Invalid("%s must be a list, not %s" % (where, type(value).__name__))
        if len(value) < min_length or (max_length is not None and len(value) > max_length):
            raise Invalid("%s must hold %d%s values, not %d" % (
                where, min_length, "" if max_length == min_length else ".." + str(max_length or "n"), len(value)))
        for i, v in enumerate(value):
            item(v, "%s[%d]" % (where, i))
    return check


def mapping(item):
    def check(value, where):
        if not isinstance(value, dict):
            raise Invalid("%s must be an object, not %s" % (where, type(value).__name__))
        for key, v in value.items():
            item(v, "%s.%s" % (where, key))
    return check


METRICS = obj({"image_auroc": fraction, "pixel_auroc": fraction, "aupro": fraction,
               "image_auroc_per_type": obj({t: fraction for t in TYPES})})

RESULT = obj({"run": text, "table": text, "label": text, "seed": whole(0), "parameters": whole(1),
              "gflops_per_image": positive, "training_seconds": non_negative, "config": obj({"model": text}),
              "metrics": METRICS, "features": obj({"file": text, "sha256": text}), "host": obj({"cpu": text})},
             optional=(("loss_history", array(_number)), ("parallel_runs", whole(1)),
                       ("metrics_by_epoch", mapping(obj({"image_auroc": fraction, "aupro": fraction})))))

SPEED = obj({"what": text, "date": text, "host": text, "threads": whole(1), "rounds": whole(1),
             "load_average_before": array(non_negative, 1, 3), "load_average_after": array(non_negative, 1, 3),
             "runs": mapping(obj({"median": positive, "images_per_second": array(positive, 1)}))})


def check_result(value):
    """Raises Invalid naming the first field of a result file that is missing, mistyped or out of range."""
    RESULT(value, "result")


def check_speed(value):
    SPEED(value, "speed")
