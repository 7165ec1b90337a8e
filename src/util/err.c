/* err.c — status names and the one function that formats error messages. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "util/util.h"

static const char *const status_names[MP_STATUS_COUNT] = {
    "MP_OK",         "MP_ERR_IO",  "MP_ERR_FORMAT",    "MP_ERR_UNSUPPORTED",
    "MP_ERR_NOMEM",  "MP_ERR_ARG", "MP_ERR_NOT_FOUND", "MP_ERR_CHECK",
};

const char *mp_status_name(mp_status s) {
    if ((int)s < 0 || s >= MP_STATUS_COUNT) return "?";
    return status_names[s];
}

mp_status mp_err_set(mp_err *err, mp_status status, const char *fmt, ...) {
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
        err->status = status;
    }
    return status;
}

const char *mp_errno_str(int e) {
    return strerror(e);
}
