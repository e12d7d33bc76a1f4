// The shape a dashboard of deploy/grafana/dashboards must have, built from Grafana's own
// published schema (@grafana/schema: the dashboard model and the timeseries and stat panel
// plugins' options and field config). check.mjs writes each dashboard JSON into a typed
// literal (generated/<name>.ts) and `tsc --noEmit --strict` checks it: an unknown field
// anywhere (excess property), a wrong panel type, or a value outside a field's allowed
// literals fails the check.
import type {
  Dashboard,
  DataQuery,
  DataSourceRef,
  FieldConfigSource,
  Panel,
  RowPanel,
} from '@grafana/schema';
import type {
  FieldConfig as TimeSeriesFieldConfig,
  Options as TimeSeriesOptions,
} from '@grafana/schema/dist/esm/raw/composable/timeseries/panelcfg/x/TimeSeriesPanelCfg_types.gen';
import type { Options as StatOptions } from '@grafana/schema/dist/esm/raw/composable/stat/panelcfg/x/StatPanelCfg_types.gen';

// JSON carries an enum's value, not the enum: `${E}` turns a string enum into the union of
// its values (numeric enums already accept their numbers). Applied through the whole shape.
type Json<T> = T extends string
  ? `${T}`
  : T extends number | boolean | null | undefined
    ? T
    : T extends Array<infer U>
      ? Array<Json<U>>
      : T extends object
        ? { [K in keyof T]: Json<T[K]> }
        : T;

// The Prometheus data source's query (PromQuery of Grafana's Prometheus plugin, which
// @grafana/schema does not publish): the fields these dashboards use.
interface PromQuery extends DataQuery {
  expr: string;
  legendFormat?: string;
  range?: boolean;
  instant?: boolean;
  format?: 'time_series' | 'table' | 'heatmap';
  editorMode?: 'code' | 'builder';
  interval?: string;
}

type Common = Omit<Panel, 'type' | 'options' | 'fieldConfig' | 'targets' | 'datasource'> & {
  datasource: DataSourceRef;
  targets: PromQuery[];
};

type TimeSeriesPanel = Common & {
  type: 'timeseries';
  options: TimeSeriesOptions;
  fieldConfig: FieldConfigSource<TimeSeriesFieldConfig>;
};

type StatPanel = Common & {
  type: 'stat';
  options: StatOptions;
  fieldConfig: FieldConfigSource;
};

// An expanded row: its panels follow it in the dashboard's own list.
type Row = Omit<RowPanel, 'panels'> & { panels: [] };

export type StrictDashboard = Json<
  Omit<Dashboard, 'panels'> & { panels: Array<TimeSeriesPanel | StatPanel | Row> }
>;
