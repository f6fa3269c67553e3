"""The admin's display of dates and times (FORMAT_MODULE_PATH): the same as config/timefmt.py everywhere.

Django's own English formats ("Dec. 1, 2026, 4:46 p.m.") drop the seconds and
the time zone; input formats stay Django's.
"""

from config.timefmt import DATETIME_FORMAT

DATE_FORMAT = "Y-m-d"
SHORT_DATE_FORMAT = "Y-m-d"
DATETIME_FORMAT = DATETIME_FORMAT
SHORT_DATETIME_FORMAT = DATETIME_FORMAT
TIME_FORMAT = "H:i:s"
