/* profile.h — internals of the profiler: the built-in calibration texts and
 * the hook that turns the engine's routing decisions into statistics. */
#ifndef MP_PROFILE_H
#define MP_PROFILE_H

#include "util/util.h"

typedef struct mp_calib_class {
    const char *name; /* "math", "logic", "code", "science", "creative" */
    const char *text;
} mp_calib_class;

/* The built-in calibration set (calib_text.c). */
const mp_calib_class *mp_calib_builtin(size_t *n);

#endif
