/* file.c — small file-system helpers: identity checks and atomic writes of
 * small outputs (JSON maps, reports). Large outputs stream through the GGUF
 * writer, which follows the same temp-file-then-rename rule. */
#include <errno.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util/util.h"

bool mp_file_same(const char *a, const char *b) {
    struct stat sa, sb;
    if (stat(a, &sa) != 0 || stat(b, &sb) != 0) return false;
    return sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

mp_status mp_file_write_atomic(const char *path, const void *data, size_t len, bool overwrite,
                               mp_err *err) {
    struct stat st;
    if (!overwrite && stat(path, &st) == 0)
        return mp_err_set(err, MP_ERR_ARG, "%s: file exists (use --force to replace it)", path);
    char *tmp = NULL;
    int fd = -1, slot = -1;
    mp_status s = mp_tempfile_create(path, &tmp, &fd, &slot, err);
    if (s) return s;
    const char *p = data;
    while (len > 0) {
        ssize_t w = write(fd, p, len);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) {
            s = mp_err_set(err, MP_ERR_IO, "%s: write failed: %s", path, strerror(errno));
            goto done;
        }
        p += w;
        len -= (size_t)w;
    }
    if (fsync(fd) != 0 || close(fd) != 0) {
        fd = -1;
        s = mp_err_set(err, MP_ERR_IO, "%s: sync failed: %s", path, strerror(errno));
        goto done;
    }
    fd = -1;
    if (rename(tmp, path) != 0) {
        s = mp_err_set(err, MP_ERR_IO, "%s: rename failed: %s", path, strerror(errno));
        goto done;
    }
    mp_free(tmp);
    tmp = NULL;
done:
    if (fd >= 0) close(fd);
    if (tmp) {
        unlink(tmp);
        mp_free(tmp);
    }
    mp_tempfile_unregister(slot);
    return s;
}
