/* args.c - see args.h. */
#include "args.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

static void print_help(const char *cmd, const char *usage, const km_flag *flags) {
    printf("usage: kmseg %s %s\n\noptions:\n", cmd, usage);
    for (const km_flag *f = flags; f->name; f++) {
        char def[256] = "";
        switch (f->type) {
        case KM_FLAG_STR: {
            const char *v = *(const char **)f->ptr;
            if (v) snprintf(def, sizeof def, " (default: %s)", v);
            break;
        }
        case KM_FLAG_INT: snprintf(def, sizeof def, " (default: %d)", *(int *)f->ptr); break;
        case KM_FLAG_FLOAT: snprintf(def, sizeof def, " (default: %g)", *(double *)f->ptr); break;
        case KM_FLAG_BOOL: snprintf(def, sizeof def, " (default: %s)", *(int *)f->ptr ? "on" : "off"); break;
        case KM_FLAG_MULTI: snprintf(def, sizeof def, " (repeatable)"); break;
        }
        printf("  %-22s %s%s%s\n", f->name, f->help, def, f->required ? " [required]" : "");
    }
}

km_status km_parse_flags(const char *cmd, const char *usage, km_flag *flags, int argc, char **argv,
                         int *help_shown) {
    *help_shown = 0;
    for (km_flag *f = flags; f->name; f++) f->seen = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            print_help(cmd, usage, flags);
            *help_shown = 1;
            return KM_OK;
        }
        const char *eq = strchr(a, '=');
        size_t nlen = eq ? (size_t)(eq - a) : strlen(a);
        km_flag *f = NULL;
        for (km_flag *g = flags; g->name; g++)
            if (strlen(g->name) == nlen && !strncmp(g->name, a, nlen)) f = g;
        if (!f)
            return km_err(KM_EARG, "unknown flag or argument '%s' (see kmseg %s --help)", a, cmd);
        const char *val = NULL;
        if (f->type == KM_FLAG_BOOL) {
            if (eq) {
                val = eq + 1;
                if (!strcmp(val, "1") || !strcmp(val, "true") || !strcmp(val, "on")) *(int *)f->ptr = 1;
                else if (!strcmp(val, "0") || !strcmp(val, "false") || !strcmp(val, "off")) *(int *)f->ptr = 0;
                else return km_err(KM_EARG, "flag %s: expected on/off, got '%s'", f->name, val);
            } else {
                *(int *)f->ptr = 1;
            }
            f->seen = 1;
            continue;
        }
        if (eq) val = eq + 1;
        else if (i + 1 < argc) val = argv[++i];
        else return km_err(KM_EARG, "flag %s needs a value", f->name);
        char *end;
        errno = 0;
        switch (f->type) {
        case KM_FLAG_STR: *(const char **)f->ptr = val; break;
        case KM_FLAG_INT: {
            long v = strtol(val, &end, 10);
            if (*val == 0 || *end || errno || v < -2147483647L || v > 2147483647L)
                return km_err(KM_EARG, "flag %s: expected an integer, got '%s'", f->name, val);
            *(int *)f->ptr = (int)v;
            break;
        }
        case KM_FLAG_FLOAT: {
            double v = strtod(val, &end);
            if (*val == 0 || *end || errno)
                return km_err(KM_EARG, "flag %s: expected a number, got '%s'", f->name, val);
            *(double *)f->ptr = v;
            break;
        }
        case KM_FLAG_MULTI: {
            km_strlist *l = f->ptr;
            char **items = km_malloc(sizeof(char *) * (l->n + 1));
            if (l->n) memcpy(items, l->items, sizeof(char *) * l->n);
            km_free(l->items);
            l->items = items;
            l->items[l->n++] = (char *)val;
            break;
        }
        case KM_FLAG_BOOL: break;
        }
        f->seen = 1;
    }
    for (km_flag *f = flags; f->name; f++)
        if (f->required && !f->seen)
            return km_err(KM_EARG, "missing required flag %s (see kmseg %s --help)", f->name, cmd);
    return KM_OK;
}

void km_strlist_free(km_strlist *l) {
    km_free(l->items);
    l->items = NULL;
    l->n = 0;
}

km_status km_flags_resume_only(const km_flag *flags, const char *const *allowed, const char *run,
                               const char *config, int *threads_seen) {
    *threads_seen = 0;
    for (const km_flag *f = flags; f->name; f++) {
        if (!f->seen) continue;
        int ok = !strcmp(f->name, "--resume");
        for (int i = 0; allowed[i] && !ok; i++) ok = !strcmp(f->name, allowed[i]);
        if (!ok)
            return km_err(KM_EARG, "%s cannot be combined with --resume: the settings come from %s/%s", f->name,
                          run, config);
        *threads_seen |= !strcmp(f->name, "--threads");
    }
    return KM_OK;
}

void km_resume_threads(int *run_threads, int given, int threads_seen, int warn) {
    if (!threads_seen) return;
    if (given != *run_threads && warn)
        fprintf(stderr, "warning: --threads %d differs from the run's %d: the result will not be bit-identical "
                        "to an uninterrupted run\n", given, *run_threads);
    *run_threads = given;
}
