/**
 * Validates a VirtualService the routers wrote against Istio's schema
 * (@kubernetes-models/istio, generated from Istio's CRDs), plus the rules
 * Istio's validating webhook adds on weighted routes.
 *
 * The package ships networking.istio.io v1alpha3/v1beta1 schemas; Istio's v1
 * API (GA in 1.22) serves the very same schema under a new version, so a v1
 * object is validated with the v1beta1 schema.
 */
import { expect } from 'chai';
import { VirtualService } from '@kubernetes-models/istio/networking.istio.io/v1beta1/VirtualService';

export function expectValidVirtualService(object: unknown): void {
  const value = object as { apiVersion?: string; spec?: { http?: { route?: { destination?: { host?: string }; weight?: number }[] }[] } };
  expect(value.apiVersion).to.be.oneOf(['networking.istio.io/v1', 'networking.istio.io/v1beta1']);
  new VirtualService({ ...(value as object), apiVersion: 'networking.istio.io/v1beta1' } as never).validate();
  for (const route of value.spec?.http ?? []) {
    const destinations = route.route ?? [];
    for (const destination of destinations) expect(destination.destination?.host, 'every destination names a host').to.be.a('string').that.is.not.empty;
    if (destinations.length > 1) {
      const total = destinations.reduce((sum, d) => sum + (d.weight ?? 0), 0);
      expect(total, 'weights of a split route sum to 100').to.equal(100);
    }
  }
}
