/* settings.h - one table per configuration. Each row names one setting of a
 * config struct once and drives, from that one place:
 *   - its default                       km_settings_default
 *   - its flag and --help text          km_cli_add_settings + km_cli_parse + km_cli_apply
 *   - its range check                   km_settings_check
 *   - its config.json key, written      km_jw_settings (a small JSON object writer)
 *     and read back                     km_settings_from_json
 *   - the experiment runner's pass-through of its flag    km_passlist_add
 * So adding a setting is one row (plus the code that uses it). Checks that
 * involve several settings (val + test fractions < 1, size a multiple of 32)
 * stay in the configuration's own check function, after km_settings_check.
 *
 *   static const km_setting rows[] = {
 *       {"lr", "--lr", KM_SET_DBL, offsetof(cfg, lr), 5e-5, 0, KM_SET_GT, 0, 0, NULL, KM_SET_PASS, "Adam learning rate"},
 *       ...};
 *   const km_settings k_table = {"train", rows, sizeof rows / sizeof rows[0]};
 *
 * Tables in use: km_train_settings (train.h), km_simclr_settings (simclr.h),
 * km_refine_settings (refine.h: the refined-mode flags of eval and predict).
 *
 * Values: STR is a char * (NULL allowed unless KM_SET_REQUIRED; strings read
 * from JSON are owned: km_settings_free_strings); INT and BOOL an int (BOOL
 * is written as 0/1, a flag without value); DBL a double (written %.17g,
 * round-trips); F32 a float (written %.9g); U64 a uint64_t (its flag takes
 * an int >= 0); F32PAIR two consecutive floats, a JSON array [a, b] (no
 * flag); ENUM an int (or an enum type) whose values have names (`names`,
 * with `values` when they are not 0, 1, 2...), written and given as the name. */
#ifndef KM_SETTINGS_H
#define KM_SETTINGS_H

#include "../core/args.h"
#include "../core/km.h"

#include <stddef.h>

typedef enum { KM_SET_STR, KM_SET_INT, KM_SET_BOOL, KM_SET_DBL, KM_SET_F32, KM_SET_U64, KM_SET_F32PAIR, KM_SET_ENUM } km_set_type;

/* range: which bounds apply (lo / hi) */
enum { KM_SET_GE = 1, KM_SET_GT = 2, KM_SET_LE = 4, KM_SET_LT = 8 };
/* attr bits */
enum {
    KM_SET_OPTIONAL = 1, /* may be absent from config.json (older runs): keeps its default */
    KM_SET_REQUIRED = 2, /* STR: must not be NULL in config.json */
    KM_SET_PASS = 4,     /* `kmseg experiments` passes this flag through to the command */
    KM_SET_NEUTRAL = 8,  /* changes no result (threads: bit level only; caches): may go with --resume */
    KM_SET_OMIT_DEFAULT = 16, /* INT/BOOL/ENUM/STR added later: km_jw_settings writes it only when it is
                                 not its default (STR: not NULL), so earlier config files re-write byte
                                 for byte */
};

typedef struct {
    const char *key;   /* config.json key (NULL: flag only, not saved) */
    const char *flag;  /* "--name" (NULL: not a flag) */
    km_set_type type;
    size_t off;        /* offsetof the value in the config struct */
    double def, def2;  /* default (numbers, an ENUM's value; def2: second of a pair); STR defaults to NULL */
    unsigned range;    /* KM_SET_GE | KM_SET_LT ...: lo / hi bounds checked by km_settings_check */
    double lo, hi;
    const char *why;   /* appended to a range error in parentheses (NULL: none) */
    unsigned attr;
    const char *help;  /* --help text */
    const char *const *names; /* ENUM: NULL-terminated names */
    const int *values;        /* ENUM: the value of each name (NULL: its index) */
} km_setting;

typedef struct {
    const char *name; /* the configuration ("train", "pretrain") */
    const km_setting *rows;
    int n;
} km_settings;

/* Every row's default into cfg (STR rows: NULL). Other fields are left alone. */
void km_settings_default(const km_settings *t, void *cfg);
/* KM_EARG "--flag VALUE: expected >= lo (why)" (or "in [lo, hi)") for the
 * first row whose value is outside its range (NaN always is). */
km_status km_settings_check(const km_settings *t, const void *cfg);
/* Reads every keyed row from the object j (parsed from `path`); a key absent
 * from j fails with KM_EMISSING "PATH: missing setting 'KEY'" unless the row
 * is KM_SET_OPTIONAL or the key is in `optional` (NULL-terminated, may be
 * NULL); a wrong type is KM_EFORMAT "PATH: 'KEY' must be ...". Strings read
 * are owned by cfg (those rows must hold owned strings or NULL before). */
struct km_json;
km_status km_settings_from_json(const km_settings *t, const struct km_json *j, const char *path,
                                const char *const *optional, void *cfg);
/* Frees (and NULLs) every STR row's string of cfg. */
void km_settings_free_strings(const km_settings *t, void *cfg);

/* ---- config.json writer: "{\n  \"key\": value,\n  ...\n}\n" ---- */
typedef struct {
    char *b;
    size_t len, cap;
    int n; /* members written */
} km_jw;
void km_jw_str(km_jw *w, const char *key, const char *v); /* NULL -> null */
void km_jw_int(km_jw *w, const char *key, long long v);
void km_jw_num(km_jw *w, const char *key, double v); /* %.9g; not finite -> null */
/* Every keyed row of t in table order, except the keys in `skip` (may be NULL). */
void km_jw_settings(km_jw *w, const km_settings *t, const void *cfg, const char *const *skip);
/* One keyed row of t by key (it must exist). */
void km_jw_setting(km_jw *w, const km_settings *t, const void *cfg, const char *key);
/* Closes the object, writes it to `path` atomically and frees the buffer. */
km_status km_jw_write(km_jw *w, const char *path);

/* ---- command line: the flags of one or more tables plus process flags ---- */
enum { KM_CLI_MAX = 96 };
typedef union {
    const char *s;
    int i;
    double d;
} km_cli_arg;
typedef struct {
    km_flag flags[KM_CLI_MAX + 1]; /* NULL-terminated for km_parse_flags */
    km_cli_arg args[KM_CLI_MAX];   /* what setting flags parse into */
    const km_setting *row[KM_CLI_MAX]; /* the row of flag i (NULL: a process flag) */
    void *cfg[KM_CLI_MAX];
    int n;
} km_cli;
void km_cli_init(km_cli *cli);
/* Adds a flag for every row of t that has one (except the flags in `skip`),
 * showing cfg's current value as the default. */
void km_cli_add_settings(km_cli *cli, const km_settings *t, void *cfg, const char *const *skip);
/* Adds a flag that is not a setting (--resume, --quiet, --stop-after...). */
void km_cli_add(km_cli *cli, const char *name, km_flag_type type, void *ptr, const char *help);
/* Adds every row of a {0}-terminated km_flag array as it is (required included). */
void km_cli_add_flags(km_cli *cli, const km_flag *flags);
km_status km_cli_parse(km_cli *cli, const char *cmd, const char *usage, int argc, char **argv, int *help_shown);
/* Copies the setting flags that were given into their configs (a U64 flag
 * must be >= 0, an ENUM one one of its names: KM_EARG naming the flag).
 * String values point into argv. */
km_status km_cli_apply(const km_cli *cli);
/* Whether flag `name` was given. */
int km_cli_seen(const km_cli *cli, const char *name);

/* ---- the experiment runner's pass-through flags ---- */
typedef struct {
    const char *flag, *help;
    int to;      /* bit set of the commands it goes to (the caller's numbering) */
    int is_bool;
    int neutral; /* KM_SET_NEUTRAL */
    char *val;   /* the value given to the runner (NULL: not given) */
} km_passflag;
typedef struct {
    km_passflag items[KM_CLI_MAX];
    int n;
} km_passlist;
/* Adds t's KM_SET_PASS rows (except the flags in `skip`) with command bit
 * `to`; a flag already listed gets the bit added (its help stays). */
void km_passlist_add(km_passlist *l, const km_settings *t, int to, const char *const *skip);

#endif
