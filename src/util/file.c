/* file.c — small file-system helpers: identity checks and atomic writes of
 * small outputs (JSON maps, reports). Large outputs stream through the GGUF
 * writer, which follows the same temp-file-then-rename rule. */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
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

mp_status mp_file_map(const char *path, const uint8_t **data, size_t *size, mp_err *err) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return mp_err_set(err, MP_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        return mp_err_set(err, MP_ERR_IO, "%s: cannot stat: %s", path, strerror(e));
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return mp_err_set(err, MP_ERR_IO, "%s: not a regular file", path);
    }
    size_t n = (size_t)st.st_size;
    void *map = NULL;
    if (n > 0) {
        map = mmap(NULL, n, PROT_READ, MAP_PRIVATE, fd, 0);
        if (map == MAP_FAILED) {
            int e = errno;
            close(fd);
            return mp_err_set(err, MP_ERR_IO, "%s: cannot map %zu bytes: %s", path, n, strerror(e));
        }
    }
    close(fd);
    *data = map;
    *size = n;
    return MP_OK;
}

void mp_file_unmap(const uint8_t *data, size_t size) {
    if (data) munmap((void *)data, size);
}

/* ------------------------------------------------------------------------ */
/* Output files published by rename                                          */
/* ------------------------------------------------------------------------ */

static mp_status outfile_error(mp_outfile *o, mp_err *err, const char *what) {
    return mp_err_set(err, MP_ERR_IO, "%s: %s failed: %s", o->path, what, strerror(errno));
}

mp_status mp_outfile_open(mp_outfile *o, const char *path, bool overwrite, mp_err *err) {
    *o = (mp_outfile){.tmp_slot = -1};
    struct stat st;
    if (!overwrite && stat(path, &st) == 0)
        return mp_err_set(err, MP_ERR_ARG, "%s: file exists (use --force to replace it)", path);
    if (!(o->path = mp_strdup(path)))
        return mp_err_set(err, MP_ERR_NOMEM, "%s: out of memory", path);
    int fd = -1;
    mp_status s = mp_tempfile_create(path, &o->tmp_path, &fd, &o->tmp_slot, err);
    if (!s && !(o->f = fdopen(fd, "wb"))) {
        s = outfile_error(o, err, "fdopen");
        close(fd);
    }
    if (s) mp_outfile_discard(o);
    return s;
}

mp_status mp_outfile_sync(mp_outfile *o, mp_err *err) {
    if (fflush(o->f) != 0) return outfile_error(o, err, "flush");
    if (fsync(fileno(o->f)) != 0) return outfile_error(o, err, "fsync");
    const int rc = fclose(o->f);
    o->f = NULL;
    return rc != 0 ? outfile_error(o, err, "close") : MP_OK;
}

mp_status mp_outfile_publish(mp_outfile *o, mp_err *err) {
    if (rename(o->tmp_path, o->path) != 0) return outfile_error(o, err, "rename");
    mp_tempfile_unregister(o->tmp_slot);
    o->tmp_slot = -1;
    mp_free(o->tmp_path);
    o->tmp_path = NULL;
    return MP_OK;
}

void mp_outfile_discard(mp_outfile *o) {
    if (o->f) fclose(o->f);
    if (o->tmp_path) unlink(o->tmp_path);
    mp_tempfile_unregister(o->tmp_slot);
    mp_free(o->path);
    mp_free(o->tmp_path);
    *o = (mp_outfile){.tmp_slot = -1};
}
