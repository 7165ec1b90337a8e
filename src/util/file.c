/* file.c — small file-system helpers. */
#include <sys/stat.h>

#include "util/util.h"

bool mp_file_same(const char *a, const char *b) {
    struct stat sa, sb;
    if (stat(a, &sa) != 0 || stat(b, &sb) != 0) return false;
    return sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}
