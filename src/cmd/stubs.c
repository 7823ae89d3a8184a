#include "cmd.h"
km_status km_cmd_forward(int argc, char **argv) { (void)argc; (void)argv; return km_err(KM_EINTERNAL, "not yet"); }
km_status km_cmd_info(int argc, char **argv) { (void)argc; (void)argv; return km_err(KM_EINTERNAL, "not yet"); }
km_status km_cmd_demo(int argc, char **argv) { (void)argc; (void)argv; return km_err(KM_EINTERNAL, "not yet"); }
