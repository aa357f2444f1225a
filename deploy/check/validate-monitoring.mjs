// Validates the Prometheus-operator resources (monitoring.coreos.com/v1) of YAML files against the operator's
// schemas, as packaged by @kubernetes-models/prometheus-operator. Other kinds are skipped; an unknown kind of this
// API group, or an invalid resource, fails.
// The packages are ES modules, resolved from this file's folder: run a copy placed beside their node_modules.
//   node validate-monitoring.mjs FILE...
import fs from "node:fs";
import yaml from "js-yaml";

const GROUP = "monitoring.coreos.com/v1";
let checked = 0;
let failed = 0;
for (const file of process.argv.slice(2)) {
  for (const doc of yaml.loadAll(fs.readFileSync(file, "utf8"))) {
    if (!doc || doc.apiVersion !== GROUP) continue;
    const where = `${file}: ${doc.kind}/${doc.metadata && doc.metadata.name}`;
    let Kind;
    try {
      Kind = (await import(`@kubernetes-models/prometheus-operator/${GROUP}/${doc.kind}`))[doc.kind];
    } catch (e) {
      console.error(`FAIL ${where}: no schema for kind ${doc.kind} in ${GROUP}`);
      failed++;
      continue;
    }
    try {
      new Kind(doc).validate();
      console.log(`ok   ${where}`);
      checked++;
    } catch (e) {
      console.error(`FAIL ${where}: ${e.message}`);
      failed++;
    }
  }
}
console.log(`${checked} valid, ${failed} invalid`);
process.exit(failed > 0 || checked === 0 ? 1 : 0);
