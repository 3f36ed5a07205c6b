import type { Command } from 'commander';
import { QuestionnairePackage, isDtrVersion } from '@dtr/fhir';
import { isUsable, loadPackageFromPath, resourcesOf, validatePackage } from '@dtr/payer';
import { compileCqlOnlyInWorker } from './prefill.commands.js';

/**
 * `dtr package check <bundle-or-folder>`: loads a questionnaire package in any shape and prints every problem
 * (library, define, include, value set, reference). Exit code 0 when usable, 2 when not. Payers can run it on
 * their own content.
 */
export function registerPackageCommands(program: Command): void {
  const pkg = program.command('package').description('payer questionnaire packages');
  pkg
    .command('check <path>')
    .description('validate a $questionnaire-package answer, Bundle, or folder of FHIR JSON')
    .option('--ig <version>', 'DTR IG version the payer speaks: 2.0.1, 2.1 or 2.2', '2.2')
    .option('--json', 'print the result as JSON')
    .action(async (target: string, options: { ig: string; json?: boolean }) => {
      if (!isDtrVersion(options.ig)) {
        process.stderr.write(`dtr: --ig must be 2.0.1, 2.1 or 2.2 (got ${options.ig})\n`);
        process.exitCode = 64;
        return;
      }
      const response = loadPackageFromPath(target);
      // CQL-only libraries are compiled as a session would compile them (in the translator's worker, under the size
      // cap and the deadline); failures are issues like any other.
      const compiled = await compileCqlOnlyInWorker(resourcesOf(response));
      const model = QuestionnairePackage.fromResources(compiled.resources);
      const issues = [...compiled.issues, ...validatePackage(model)];
      const usable = isUsable(issues);
      if (options.json) {
        process.stdout.write(`${JSON.stringify({ usable, shape: response.shape, issues }, null, 2)}\n`);
      } else {
        const out: string[] = [];
        out.push(`package: ${target} (shape ${response.shape}, DTR ${options.ig})`);
        out.push(
          `  ${model.questionnaires.length} questionnaire(s), ${model.libraries.length} librar${model.libraries.length === 1 ? 'y' : 'ies'}, ${model.valueSets.length} value set(s)`,
        );
        if (response.skipped.length > 0)
          out.push(`  skipped ${response.skipped.length} JSON file(s) that are not FHIR resources`);
        for (const outcome of response.outcomes) out.push(`  payer outcome: ${JSON.stringify(outcome['issue'] ?? [])}`);
        for (const issue of issues) {
          const where = [
            issue.questionnaire,
            issue.linkId && `item ${issue.linkId}`,
            issue.library,
            issue.define,
            issue.valueSet,
          ]
            .filter(Boolean)
            .join(' / ');
          out.push(
            `  ${issue.severity.toUpperCase().padEnd(11)} ${issue.code}: ${issue.message}${where ? `  [${where}]` : ''}`,
          );
        }
        const counts = ['error', 'warning', 'information']
          .map((s) => `${issues.filter((i) => i.severity === s).length} ${s}`)
          .join(', ');
        out.push(`${usable ? 'usable' : 'NOT usable'}: ${counts}`);
        process.stdout.write(`${out.join('\n')}\n`);
      }
      if (!usable) process.exitCode = 2;
    });
}
