/* tempfiles.c — the temporary files this process is writing, so that an
 * interrupted run (Ctrl-C, SIGTERM) leaves nothing behind.
 *
 * Writers create their output as a temporary file beside the target and
 * rename it into place when complete; until then it is registered here. The
 * CLI's signal handler calls mp_tempfiles_remove_all, which only uses unlink
 * and atomic loads, both safe in a signal handler. This is the one piece of
 * process-wide mutable state in the library, and it exists because a signal
 * handler has no other way to reach the writers. */
#include <errno.h>
#include <libgen.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util/util.h"

#define MP_MAX_TEMPFILES 32
#define MP_TEMPFILE_PATH 4096

static char paths[MP_MAX_TEMPFILES][MP_TEMPFILE_PATH];
static atomic_int used[MP_MAX_TEMPFILES]; /* 0 free, 1 being filled, 2 registered */

int mp_tempfile_register(const char *path) {
    size_t n = strlen(path);
    if (n >= MP_TEMPFILE_PATH) return -1;
    for (int i = 0; i < MP_MAX_TEMPFILES; i++) {
        int expect = 0;
        if (atomic_compare_exchange_strong(&used[i], &expect, 1)) {
            memcpy(paths[i], path, n + 1);
            atomic_store(&used[i], 2);
            return i;
        }
    }
    return -1; /* more than 32 outputs at once: they just aren't cleaned on a signal */
}

void mp_tempfile_unregister(int slot) {
    if (slot >= 0 && slot < MP_MAX_TEMPFILES) atomic_store(&used[slot], 0);
}

void mp_tempfiles_remove_all(void) {
    for (int i = 0; i < MP_MAX_TEMPFILES; i++)
        if (atomic_load(&used[i]) == 2) unlink(paths[i]);
}

mp_status mp_tempfile_create(const char *path, char **tmp_path, int *fd, int *slot, mp_err *err) {
    char *dcopy = mp_strdup(path), *bcopy = mp_strdup(path), *tmp = NULL;
    mp_status s = MP_OK;
    if (!dcopy || !bcopy) {
        s = mp_err_set(err, MP_ERR_NOMEM, "%s: out of memory", path);
        goto done;
    }
    const char *dir = dirname(dcopy), *base = basename(bcopy);
    size_t n = strlen(dir) + strlen(base) + 32;
    if (!(tmp = mp_malloc(n))) {
        s = mp_err_set(err, MP_ERR_NOMEM, "%s: out of memory", path);
        goto done;
    }
    snprintf(tmp, n, "%s/.%s.XXXXXX", dir, base);
    int f = mkstemp(tmp);
    if (f < 0) {
        s = mp_err_set(err, MP_ERR_IO, "%s: cannot create a temporary file in '%s': %s", path,
                       dir, strerror(errno));
        goto done;
    }
    fchmod(f, 0644);
    *slot = mp_tempfile_register(tmp);
    *fd = f;
    *tmp_path = tmp;
    tmp = NULL;
done:
    mp_free(tmp);
    mp_free(dcopy);
    mp_free(bcopy);
    return s;
}
