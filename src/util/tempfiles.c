/* tempfiles.c — the temporary files this process is writing, so that an
 * interrupted run (Ctrl-C, SIGTERM) leaves nothing behind.
 *
 * Writers create their output as a temporary file beside the target and
 * rename it into place when complete; until then it is registered here. The
 * CLI's signal handler calls mp_tempfiles_remove_all, which only uses unlink
 * and atomic loads, both safe in a signal handler. This is the one piece of
 * process-wide mutable state in the library, and it exists because a signal
 * handler has no other way to reach the writers. */
#include <stdatomic.h>
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
