#include "cmd.h"
km_status km_cmd_predict(int argc, char **argv) { (void)argc; (void)argv; return km_err(KM_EINTERNAL, "not yet"); }
