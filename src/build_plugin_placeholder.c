/* Linked by `uwsgi --build-plugin` only because uwsgiconfig.py refuses an empty GCC_LIST; the
 * result is replaced by cargo's cdylib in uwsgiplugin.py's post_build(). */
int metrics_prometheus_build_plugin_placeholder;
